"""Glob patterns relative to a policy root, where ``**`` spans directories.

``*`` and ``?`` never cross a ``/``; a ``**`` segment matches zero or more whole segments,
so ``**/*.log`` matches ``a.log`` and ``x/y/a.log``. Patterns are anchored at the root.
"""

import re
from functools import lru_cache


def _segment(seg: str) -> str:
    out, i = [], 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            # A ']' right after '[' or '[!' is a literal member, not the end of the class.
            start = i + 2 if seg[i + 1 : i + 2] in ("!", "^") else i + 1
            j = seg.find("]", start + 1 if seg[start : start + 1] == "]" else start)
            if j < 0:
                raise ValueError(f"unclosed [ in glob segment {seg!r}")
            body = seg[start:j]
            # Members are literal to re (no nested sets or set operations); a negated
            # class must not match '/' either, or it would cross a directory.
            body = re.sub(r"([\\\[\]&~|^])", r"\\\1", body)
            out.append(("[^/" if start == i + 2 else "[") + body + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@lru_cache(maxsize=256)
def glob_to_regex(pattern: str) -> str:
    if pattern.startswith("/"):
        raise ValueError(f"glob {pattern!r} must be relative to the policy root")
    segs = pattern.split("/")
    parts = []
    for k, seg in enumerate(segs):
        last = k == len(segs) - 1
        if seg == "**":
            parts.append(".*" if last else "(?:[^/]*/)*")
        elif "**" in seg:
            raise ValueError(f"** must be a whole path segment in {pattern!r}")
        else:
            parts.append(_segment(seg) + ("" if last else "/"))
    return "".join(parts)


def compile_globs(patterns) -> re.Pattern | None:
    """One regex matching any of ``patterns`` (None when there are none)."""
    patterns = tuple(patterns)
    if not patterns:
        return None
    try:
        return re.compile("(?:" + "|".join(glob_to_regex(p) for p in patterns) + r")\Z", re.DOTALL)
    except re.error as exc:  # e.g. a reversed range [z-a]: a bad pattern, not a crash
        raise ValueError(f"invalid glob in {list(patterns)!r}: {exc}") from None
