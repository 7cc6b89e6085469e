"""ops.retention.globs: include/exclude patterns relative to a policy root.

``**`` is a whole segment spanning zero or more directories; ``*``, ``?`` and bracket
classes never match ``/``; every pattern is anchored at both ends of the path.
"""

import warnings

import pytest

from ops.config.globs import compile_globs, glob_to_regex

MATCHES = [
    # (pattern, path, matches)
    # ** spans zero or more whole directories
    ("**/*.log", "a.log", True),
    ("**/*.log", "x/a.log", True),
    ("**/*.log", "x/y/z/a.log", True),
    ("**/*.log", "x/a.log.gz", False),
    ("**/*.log", "x/a.txt", False),
    ("x/**/a.log", "x/a.log", True),
    ("x/**/a.log", "x/y/a.log", True),
    ("x/**/a.log", "x/y/z/a.log", True),
    ("x/**/a.log", "xa.log", False),
    ("x/**/a.log", "y/x/a.log", False),
    ("x/**/a.log", "xx/a.log", False),
    ("**", "a", True),
    ("**", "a/b/c", True),
    ("x/**", "x/a", True),
    ("x/**", "x/a/b", True),
    ("x/**", "x", False),
    ("x/**", "y/x/a", False),
    ("**/current.log", "current.log", True),
    ("**/current.log", "2026/current.log", True),
    ("**/current.log", "not-current.log", False),
    ("**/current.log", "x/not-current.log", False),
    # * stays within one segment
    ("*.log", "a.log", True),
    ("*.log", ".log", True),
    ("*.log", ".hidden.log", True),
    ("*.log", "x/a.log", False),
    ("x*y", "x/y", False),
    ("x*y", "xabcy", True),
    ("x/*/z", "x/y/z", True),
    ("x/*/z", "x/y/y/z", False),
    ("x/*/z", "x//z", True),
    # ? is exactly one character, never /
    ("?.log", "a.log", True),
    ("?.log", "ab.log", False),
    ("?.log", ".log", False),
    ("a?b", "a/b", False),
    ("a?b", "a-b", True),
    # bracket classes: sets, ranges, negation; never /
    ("[abc].log", "b.log", True),
    ("[abc].log", "d.log", False),
    ("[a-c]x", "bx", True),
    ("[a-c]x", "dx", False),
    ("[!abc].log", "d.log", True),
    ("[!abc].log", "a.log", False),
    ("[^abc].log", "d.log", True),
    ("[^abc].log", "a.log", False),
    ("a[!x]b", "a/b", False),
    ("a[^x]b", "a/b", False),
    ("[]]x", "]x", True),
    ("[]]x", "ax", False),
    ("[!]]x", "ax", True),
    ("[!]]x", "]x", False),
    ("[]a]x", "ax", True),
    ("[[]x", "[x", True),
    ("[[]x", "x", False),
    ("[a-]x", "-x", True),
    ("[\\]x", "\\x", True),
    ("[&&]x", "&x", True),
    ("[0-9][0-9].csv", "07.csv", True),
    ("[0-9][0-9].csv", "7.csv", False),
    # anchored at both ends; regex metacharacters are literal
    ("a.log", "a.log", True),
    ("a.log", "x/a.log", False),
    ("a.log", "a.log.bak", False),
    ("a.log", "pre-a.log", False),
    ("a.log", "aXlog", False),
    ("logs/*.log", "x/logs/a.log", False),
    ("a+b(1)$.log", "a+b(1)$.log", True),
    ("a+b(1)$.log", "aab1.log", False),
    ("{a,b}.log", "{a,b}.log", True),
    ("{a,b}.log", "a.log", False),
    # newlines and undecodable bytes (surrogate-escaped) are ordinary characters
    ("*.log", "bad\nname.log", True),
    ("*.log", "a.log\n", False),
    ("a.log", "a.log\n", False),
    ("a?b", "a\nb", True),
    ("**/*.log", "d\nir/sub/a.log", True),
    ("**", "x\ny", True),
    ("*.log", "caf\udce9.log", True),
    ("[!a]", "\n", True),
]


@pytest.mark.parametrize("pattern, path, expected", MATCHES)
def test_glob_matches_path(pattern, path, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a FutureWarning from re means the meaning may change
        rx = compile_globs([pattern])
    assert bool(rx.match(path)) is expected, rx.pattern


def test_any_of_several_patterns_matches():
    rx = compile_globs(["**/*.jsonl", "**/*.csv"])
    assert rx.match("a/b.jsonl") and rx.match("b.csv")
    assert not rx.match("b.txt")
    assert not rx.match("b.jsonl.csv.txt")


def test_no_patterns_compile_to_none():
    assert compile_globs([]) is None


INVALID = [
    "a**b",
    "**a",
    "x/a**",
    "***",
    "x/**y/z",
    "[abc",
    "x/[",
    "[!",
    "[!]",
    "[]",
    "[z-a]",
    "/abs/*.log",
]


@pytest.mark.parametrize("pattern", INVALID)
def test_invalid_pattern_raises_value_error(pattern):
    with pytest.raises(ValueError):
        compile_globs([pattern])


def test_invalid_pattern_among_valid_ones_raises_value_error():
    with pytest.raises(ValueError):
        compile_globs(["**/*.log", "[z-a]"])


def test_glob_to_regex_is_a_plain_string_for_callers():
    assert isinstance(glob_to_regex("**/*.log"), str)
