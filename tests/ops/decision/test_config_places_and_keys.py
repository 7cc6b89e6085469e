"""Configs PyYAML and the old checks let through, refused by the real scan (exit 78, the
key named, nothing created, no data touched): a key written twice, two destinations that
are one place, a policy root that holds the config file itself."""

import os
import textwrap

import pytest

# A config as an operator writes it by hand: only text can say a key twice.
HEAD = """\
version: 1
state_dir: var/state
log_dir: var/log
"""
ONE_DEST = """\
backup:
  destinations:
    - {name: local, type: local, path: var/backups}
"""
POLICY = """\
policies:
  - name: logs
    root: data/logs
    include: ["**/*.log"]
    older_than: 30d
"""


def _scan_refuses(sandbox, text: str) -> str:
    """scan with ``text`` as the config: exit 78, the config path on stderr, nothing
    created or touched. The stderr, for the test to check the key."""
    sandbox.config_path.write_text(text)
    old = sandbox.file("2026/old.log", age_days=400)
    before = sandbox.snapshot()
    res = sandbox.run("scan")
    assert res.returncode == 78, res.stdout + res.stderr
    assert str(sandbox.config_path) in res.stderr
    assert "Traceback" not in res.stderr
    assert not (sandbox.base / "var").exists(), "no state, log or backup directory may be created"
    assert sandbox.snapshot() == before and old.exists()
    return res.stderr


def test_a_policy_key_written_twice_is_refused_naming_it_and_both_lines(sandbox):
    text = HEAD + ONE_DEST + POLICY + "    older_than: 1d\n"
    first = text.splitlines().index("    older_than: 30d") + 1
    err = _scan_refuses(sandbox, text)
    assert "policies[0].older_than" in err
    assert f"lines {first} and {first + 1}" in err, err


def test_a_top_level_key_written_twice_is_refused(sandbox):
    err = _scan_refuses(sandbox, HEAD + "state_dir: elsewhere/state\n" + ONE_DEST + POLICY)
    assert "state_dir" in err and "lines 2 and 4" in err, err


def test_a_key_overridden_after_a_yaml_merge_is_still_allowed(sandbox):
    """``<<`` merges another mapping's keys for this one to override: that is no duplicate."""
    (sandbox.data / "old").mkdir()
    sandbox.config_path.write_text(
        HEAD
        + ONE_DEST
        + textwrap.dedent("""\
        policies:
          - &first {name: logs, root: data/logs, include: ["**/*.log"], older_than: 30d}
          - <<: *first
            name: old-logs
            root: data/old
            older_than: 60d
        """)
    )
    res = sandbox.run("scan")
    assert res.returncode == 0, res.stderr


def _two_destinations(second: str, quorum: int = 2) -> str:
    return (
        HEAD
        + textwrap.dedent(f"""\
        backup:
          require_verified_copies: {quorum}
          destinations:
            - {{name: local, type: local, path: var/backups}}
            - {{name: second, {second}}}
        """)
        + POLICY
    )


@pytest.mark.parametrize(
    "second",
    [
        "type: local, path: var/../var/backups",
        "type: local, path: var/backups/",
        "type: local, path: var/backups/inner",
        "type: local, path: var",
    ],
)
def test_two_local_destinations_in_one_place_are_refused(sandbox, second):
    err = _scan_refuses(sandbox, _two_destinations(second))
    assert "backup.destinations[1].path" in err and "backup.destinations[0].path" in err, err


def test_a_local_destination_that_is_a_link_to_another_is_refused(sandbox):
    (sandbox.base / "mnt").mkdir()
    os.symlink("../var/backups", sandbox.base / "mnt" / "second")
    err = _scan_refuses(sandbox, _two_destinations("type: local, path: mnt/second"))
    assert "backup.destinations[1].path" in err, err


S3 = "type: s3, bucket: qts-archive, endpoint_url: 'http://127.0.0.1:9000'"


def _two_s3(first: str, second: str, quorum: int) -> str:
    return (
        HEAD
        + textwrap.dedent(f"""\
        backup:
          require_verified_copies: {quorum}
          destinations:
            - {{name: one, {first}}}
            - {{name: two, {second}}}
        """)
        + POLICY
    )


@pytest.mark.parametrize(
    "second",
    [
        f"{S3}, prefix: host-a/",
        f"{S3}, prefix: host-a/ticks/",
        S3,  # no prefix: the whole bucket
        "type: s3, bucket: qts-archive, endpoint_url: 'HTTP://127.0.0.1:9000/', prefix: host-a/",
    ],
)
def test_two_s3_destinations_on_the_same_bucket_with_overlapping_prefixes_are_refused(sandbox, second):
    err = _scan_refuses(sandbox, _two_s3(f"{S3}, prefix: host-a/", second, quorum=2))
    assert "backup.destinations[1].prefix" in err and "backup.destinations[0]" in err, err


@pytest.mark.parametrize(
    "second",
    [
        f"{S3}, prefix: host-b/",  # a sibling prefix: several hosts share one bucket so
        "type: s3, bucket: qts-other, endpoint_url: 'http://127.0.0.1:9000', prefix: host-a/",
        "type: s3, bucket: qts-archive, endpoint_url: 'http://10.0.0.9:9000', prefix: host-a/",
    ],
)
def test_s3_destinations_in_different_places_are_accepted(sandbox, second):
    sandbox.config_path.write_text(_two_s3(f"{S3}, prefix: host-a/", second, quorum=1))
    res = sandbox.run("plan")  # reads the config; asks no destination
    assert res.returncode == 0, res.stderr


def test_a_policy_root_that_holds_the_config_file_is_refused(sandbox, tmp_path_factory):
    """Root ``.`` beside retention.yaml, with the toolkit's own places elsewhere: the old
    config file would be archived and deleted, and the next run find no config."""
    own = tmp_path_factory.mktemp("own")
    sandbox.config_path.write_text(
        textwrap.dedent(f"""\
        version: 1
        state_dir: {own}/state
        log_dir: {own}/log
        backup:
          destinations:
            - {{name: local, type: local, path: {own}/backups}}
        policies:
          - {{name: logs, root: data/logs, older_than: 30d}}
          - {{name: everything, root: ., older_than: 1d}}
        """)
    )
    os.utime(sandbox.config_path, (0, 0))  # as old as can be: the policy would expire it
    before = sandbox.config_path.read_bytes()
    res = sandbox.run("maintenance")
    assert res.returncode == 78, res.stderr
    assert "policies[1].root" in res.stderr and f"config file {sandbox.config_path}" in res.stderr, res.stderr
    assert sandbox.config_path.read_bytes() == before
    assert os.listdir(own) == [], "nothing may be created"


def test_a_policy_root_that_holds_the_config_file_through_a_link_is_refused(sandbox, tmp_path_factory):
    own = tmp_path_factory.mktemp("own")
    os.symlink(sandbox.base, own / "host")
    err = _scan_refuses(
        sandbox,
        textwrap.dedent(f"""\
        version: 1
        state_dir: {own}/state
        log_dir: {own}/log
        backup:
          destinations:
            - {{name: local, type: local, path: {own}/backups}}
        policies:
          - {{name: logs, root: {own}/host, include: ["data/**/*.log"], older_than: 30d}}
        """),
    )
    assert "policies[0].root" in err, err
