"""Large entry files are checked side by side in forked processes (ops/state/manifest.py): the
refusal is the same one a check in turn would give, in chain order; a checker that dies
refuses too; small files are checked in the step's own process. Real forked processes,
and once a whole large run through scripts/clean.py."""

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest

from ops.errors import Refused
from ops.maintenance.step import _entry_files_checked
from ops.state.manifest import _SIDE_BY_SIDE_BYTES, Run

RUN = "20261126T031700Z-4f2a"


def _entry_file(run: Run, name: str, lines: int, extra: bytes = b"") -> str:
    """Write an entry file of ``lines`` ordinary entries (then ``extra``); return its SHA-256."""
    data = (
        b"".join(
            json.dumps(
                {
                    "path": f"d{i // 100:03d}/f{i:06d}.csv",
                    "size": 1,
                    "mtime_ns": 1,
                    "ctime_ns": 1,
                    "dev": 1,
                    "ino": i,
                    "reason": "older than 30d",
                },
                separators=(",", ":"),
            ).encode()
            + b"\n"
            for i in range(lines)
        )
        + extra
    )
    run.path(name).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _chain(run: Run, lines: int, scan_extra: bytes = b"", backup_extra: bytes = b"", backup_first: bytes = b"") -> dict:
    run.dir.mkdir(parents=True)
    backup = _entry_file(run, "backup.logs.jsonl", lines, backup_extra)
    if backup_first:  # a line put before all the others
        data = backup_first + run.path("backup.logs.jsonl").read_bytes()
        run.path("backup.logs.jsonl").write_bytes(data)
        backup = hashlib.sha256(data).hexdigest()
    return {
        "scan": {"files": {"scan.logs.jsonl": _entry_file(run, "scan.logs.jsonl", lines, scan_extra)}},
        "backup": {"files": {"backup.logs.jsonl": backup}},
    }


@pytest.fixture(autouse=True)
def two_cores(monkeypatch):
    """Two checkers whatever the host has: one more file than checkers then needs a refill."""
    monkeypatch.setattr("ops.state.manifest._cores", lambda: 2)


def _large(run: Run) -> int:
    """Lines enough for the two files together to be checked side by side."""
    return _SIDE_BY_SIDE_BYTES // 100


def _checked_by(run: Run, record: Path):
    """Wrap the per-file check so each records which process ran it."""
    check = run._check_entry_file

    def recording(name, expected, where):
        with open(record, "a") as out:
            out.write(f"{os.getpid()} {name}\n")
        check(name, expected, where)

    run._check_entry_file = recording  # forked checkers inherit the instance


def _checkers(record: Path) -> dict[str, int]:
    return {name: int(pid) for pid, name in (line.split() for line in record.read_text().splitlines())}


def test_large_intact_files_are_checked_in_two_other_processes(tmp_path):
    run = Run(tmp_path, RUN)
    chain = _chain(run, _large(run))
    _checked_by(run, tmp_path / "checkers")
    run.check_entry_files(chain)
    checkers = _checkers(tmp_path / "checkers")
    assert set(checkers) == {"scan.logs.jsonl", "backup.logs.jsonl"}
    assert os.getpid() not in checkers.values(), "a large file was checked in the step's own process"
    assert len(set(checkers.values())) == 2, "the two files were not checked side by side"


def test_small_files_are_checked_in_the_steps_own_process(tmp_path):
    run = Run(tmp_path, RUN)
    chain = _chain(run, 10)
    _checked_by(run, tmp_path / "checkers")
    run.check_entry_files(chain)
    assert set(_checkers(tmp_path / "checkers").values()) == {os.getpid()}


def test_a_changed_second_file_is_refused_with_its_own_message(tmp_path):
    run = Run(tmp_path, RUN)
    chain = _chain(run, _large(run))
    path = run.path("backup.logs.jsonl")
    data = path.read_bytes()
    at = data.rindex(b'"size":1')
    path.write_bytes(data[:at] + b'"size":2' + data[at + 8 :])  # still a valid entry, one byte off
    with pytest.raises(Refused, match="backup.logs.jsonl does not match the SHA-256 recorded in .*backup.ok.json"):
        run.check_entry_files(chain)


def test_of_two_broken_files_the_first_in_chain_order_is_reported(tmp_path):
    run = Run(tmp_path, RUN)
    # The second file's fault is on its first line, so its checker answers first.
    chain = _chain(run, _large(run), scan_extra=b'{"path":"../victim.log"}\n', backup_first=b"not json\n")
    with pytest.raises(Refused, match=r"scan.logs.jsonl line \d+: refusing path '../victim.log'"):
        run.check_entry_files(chain)


def test_a_line_that_is_not_an_entry_is_refused(tmp_path):
    run = Run(tmp_path, RUN)
    chain = _chain(run, _large(run), backup_extra=b"[" * 100_000 + b"\n")
    with pytest.raises(Refused, match=rf"backup.logs.jsonl line {_large(run) + 1} is not a valid entry"):
        run.check_entry_files(chain)


def test_a_checker_that_dies_refuses(tmp_path):
    run = Run(tmp_path, RUN)
    chain = _chain(run, _large(run))
    check = run._check_entry_file

    def dying(name, expected, where):
        if name == "backup.logs.jsonl":
            os.kill(os.getpid(), signal.SIGKILL)
        check(name, expected, where)

    run._check_entry_file = dying
    with pytest.raises(Refused, match="entry file backup.logs.jsonl could not be checked"):
        run.check_entry_files(chain)


def test_more_files_than_checkers_are_all_checked_and_a_late_refusal_still_comes(tmp_path):
    run = Run(tmp_path, RUN)
    chain = _chain(run, _large(run))
    chain["verify"] = {
        "files": {"verify.logs.jsonl": _entry_file(run, "verify.logs.jsonl", 10, b'{"path":"/etc/passwd"}\n')}
    }
    _checked_by(run, tmp_path / "checkers")
    with pytest.raises(Refused, match="verify.logs.jsonl line 11: refusing path '/etc/passwd'"):
        run.check_entry_files(chain)
    assert set(_checkers(tmp_path / "checkers")) == {"scan.logs.jsonl", "backup.logs.jsonl", "verify.logs.jsonl"}


def test_a_check_already_beside_the_work_checks_its_files_in_its_own_process(tmp_path):
    """verify's forked checker asks for no helpers of its own: they would compete with verify."""
    run = Run(tmp_path, RUN)
    chain = _chain(run, _large(run))
    _checked_by(run, tmp_path / "checkers")
    with _entry_files_checked(run, chain, alongside=True) as intact:
        intact()
    checkers = _checkers(tmp_path / "checkers")
    assert set(checkers) == {"scan.logs.jsonl", "backup.logs.jsonl"}
    assert len(set(checkers.values())) == 1 and os.getpid() not in checkers.values()


def test_clean_of_a_large_run_refuses_an_entry_file_changed_by_one_byte(sandbox):
    """The side-by-side path through the real script: a run large enough that clean checks
    its entry files in forked processes (on a host of two or more CPUs), one byte changed
    in backup's records. clean refuses, exit 2, and deletes nothing; put back, it deletes."""
    name = "n" * 120  # long names: fewer files make the entry files pass the threshold
    for i in range(3000):
        sandbox.file(f"d{i // 100:02d}/{name}{i:05d}.log", b"x")
    for step in ("scan", "backup", "verify"):
        done = sandbox.run(step)
        assert done.returncode == 0, done.stderr
    run_dir = sandbox.run_dir()
    sizes = sum(p.stat().st_size for p in run_dir.glob("*.jsonl"))
    assert sizes >= _SIDE_BY_SIDE_BYTES, sizes
    records = run_dir / "backup.logs.jsonl"
    intact = records.read_bytes()
    at = intact.rindex(b'"size":') + len(b'"size":')  # a digit in the last line: the whole file is read first
    records.write_bytes(intact[:at] + (b"2" if intact[at : at + 1] != b"2" else b"3") + intact[at + 1 :])
    before = sandbox.snapshot()

    refused = sandbox.run("clean")
    assert refused.returncode == 2, refused.stderr
    assert "backup.logs.jsonl does not match the SHA-256" in refused.stderr
    assert sandbox.snapshot() == before

    records.write_bytes(intact)
    done = sandbox.run("clean")
    assert done.returncode == 0, done.stderr
    assert sandbox.snapshot() == {}
