"""restore against what this host knows, across destinations, and after it.

Each file is checked against the strongest record the host holds (the local state, then the
catalogue, then the run's own MANIFEST.json), so a run rewritten on a destination with
every checksum there forged to match is refused; a damaged copy is passed over for the next
destination; a file restored into its root is kept by the next runs for restore_grace; the
temporary files of a restore killed by SIGKILL are removed by the rerun; a failed restore
writes its reason to the log it names. All through scripts/ as processes, on real archives.
"""

import hashlib
import json
import os
import shutil
import stat
import time
from pathlib import Path

from tools.sandbox import Sandbox

from ._operator_support import aged, corrupt, make
from ._support import change_one_byte, log_records, run_ok


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sums(run_dir: Path) -> dict[str, str]:
    lines = (run_dir / "SHA256SUMS").read_text().splitlines()
    return {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}


def _write_sums(run_dir: Path, sums: dict[str, str]) -> None:
    (run_dir / "SHA256SUMS").write_text("".join(f"{sha}  {name}\n" for name, sha in sorted(sums.items())))


def _files_under(base: Path) -> dict[str, bytes]:
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()} if base.exists() else {}


def _temporaries(base: Path) -> list[Path]:
    return [p for p in base.rglob(".*") if ".tmp-" in p.name]


# -- D9: the records this host holds decide, not the destination's own checksums ------------------


def _two_hosts(tmp_path) -> tuple[Sandbox, str, Sandbox, str]:
    """Hosts A and B, each with a finished run deleting its own app.log (different content)."""
    a, b = Sandbox(tmp_path / "host-a"), Sandbox(tmp_path / "host-b")
    aged(a, "app.log", b"host A's log, which B must never get back as its own\n" * 20)
    aged(b, "app.log", b"host B's own log\n" * 20)
    run_ok(a, "maintenance")
    run_ok(b, "maintenance")
    return a, a.runs()[-1], b, b.runs()[-1]


def _swap_in(a: Sandbox, ra: str, b: Sandbox, rb: str, manifest_too: bool = False) -> None:
    """A's archive and .sha256 file over B's run, SHA256SUMS rewritten to match (and, with
    ``manifest_too``, MANIFEST.json's digests as well): every checksum on the destination agrees."""
    src, dst = a.backups / ra, b.backups / rb
    for name in ("logs.tar.zst", "logs.sha256"):
        shutil.copyfile(src / name, dst / name)
    sums = _sums(dst)
    for name in ("logs.tar.zst", "logs.sha256"):
        sums[name] = _sha((dst / name).read_bytes())
    if manifest_too:
        manifest = json.loads((dst / "MANIFEST.json").read_bytes())
        theirs = json.loads((src / "MANIFEST.json").read_bytes())["policies"]["logs"]
        for key in ("archive_sha256", "archive_bytes", "sums_sha256", "members", "member_bytes"):
            manifest["policies"]["logs"][key] = theirs[key]
        (dst / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        sums["MANIFEST.json"] = _sha((dst / "MANIFEST.json").read_bytes())
    _write_sums(dst, sums)
    # the forgery is consistent: sha256sum -c accepts the run
    for name, sha in _sums(dst).items():
        assert _sha((dst / name).read_bytes()) == sha, name


def test_a_run_rewritten_with_another_hosts_archive_is_refused_against_the_local_state_and_the_catalogue(tmp_path):
    a, ra, b, rb = _two_hosts(tmp_path)
    mine = b.data / "logs" / "app.log"
    _swap_in(a, ra, b, rb)
    out = tmp_path / "out"

    by_run = b.run("restore", "--run", rb, "--dest", "local", "--to", str(out))
    by_file = b.run("restore", "--file", str(mine), "--dest", "local")

    assert by_run.returncode == 1, by_run.stderr
    assert f"SHA256SUMS is not the one the local state of run {rb} records" in by_run.stderr
    assert by_file.returncode == 1, by_file.stderr
    assert "the local state of run" in by_file.stderr and "SHA-256 checked" not in by_file.stderr
    assert _files_under(out) == {} and not mine.exists()

    # MANIFEST.json forged as well: the local state still holds its SHA-256
    _swap_in(a, ra, b, rb, manifest_too=True)
    by_run = b.run("restore", "--run", rb, "--to", str(out))
    assert by_run.returncode == 1, by_run.stderr
    assert f"MANIFEST.json is not the one the local state of run {rb} records" in by_run.stderr

    # Without the run's state (compacted, say), the catalogue's SHA-256 of the deleted file decides.
    shutil.rmtree(b.run_dir(rb))
    listed = json.loads(run_ok(b, "find", "--file", str(mine), "--json").stdout)
    by_file = b.run("restore", "--file", str(mine))
    assert by_file.returncode == 1, by_file.stderr
    assert "has another SHA-256 than the catalogue records" in by_file.stderr
    assert listed["sha256"] == _sha(b"host B's own log\n" * 20)
    by_run = b.run("restore", "--run", rb, "--to", str(out))
    assert by_run.returncode == 1, by_run.stderr
    assert "the catalogue" in by_run.stderr
    assert _files_under(out) == {} and not mine.exists()
    assert _temporaries(tmp_path) == []


def test_without_local_state_manifest_digests_must_agree_with_the_files_and_restore_says_it_trusts_them(tmp_path):
    a, ra, b, rb = _two_hosts(tmp_path)
    saved = {n: (b.backups / rb / n).read_bytes() for n in os.listdir(b.backups / rb)}
    shutil.rmtree(b.state)  # a host that died: nothing but the destination
    _swap_in(a, ra, b, rb)  # archive and SHA256SUMS rewritten; MANIFEST.json as backup wrote it
    out = tmp_path / "out"

    r = b.run("restore", "--run", rb, "--to", str(out))

    assert r.returncode == 1, r.stderr
    assert "MANIFEST.json records another SHA-256 for logs.tar.zst than SHA256SUMS" in r.stderr
    assert _files_under(out) == {}

    for name, data in saved.items():  # the run as backup wrote it: restored, and said on what word
        (b.backups / rb / name).write_bytes(data)
    r = b.run("restore", "--run", rb, "--to", str(out), "-v")
    assert r.returncode == 0, r.stderr
    assert f"this host has no local state of run {rb}: trusting the MANIFEST.json on local" in r.stderr
    assert "each checked against MANIFEST.json on local" in r.stderr
    assert _files_under(out) == {"logs/app.log": b"host B's own log\n" * 20}


def test_restore_says_which_record_it_checked_each_file_against(tmp_path):
    _, _, b, rb = _two_hosts(tmp_path)
    mine = b.data / "logs" / "app.log"

    r = b.run("restore", "--run", rb, "--to", str(tmp_path / "out"), "-v")
    assert r.returncode == 0, r.stderr
    assert f"each checked against the local state of run {rb}" in r.stderr
    assert "trusting" not in r.stderr

    shutil.rmtree(b.run_dir(rb))
    r = b.run("restore", "--file", str(mine), "-v")
    assert r.returncode == 0, r.stderr
    assert f"{mine} restored from run {rb} on local, SHA-256 checked against the catalogue" in r.stderr
    assert mine.read_bytes() == b"host B's own log\n" * 20


def test_an_edited_local_state_refuses_the_restore_and_says_how_to_go_on(tmp_path):
    _, _, b, rb = _two_hosts(tmp_path)
    change_one_byte(b.run_dir(rb) / "backup.logs.jsonl", b'"size":')

    r = b.run("restore", "--run", rb, "--to", str(tmp_path / "out"))

    assert r.returncode == 2, r.stderr
    assert "restore checks every file against this state" in r.stderr
    assert f"move {b.run_dir(rb)} aside" in r.stderr
    assert not (tmp_path / "out").exists()


# -- D11: the next destination when a copy fails ----------------------------------------------------


def _two_copies(sandbox: Sandbox) -> tuple[str, dict[str, bytes]]:
    """A finished run verified on two local destinations, ``first`` then ``second``."""
    sandbox.config["backup"]["destinations"] = [
        {"name": "first", "type": "local", "path": "var/first"},
        {"name": "second", "type": "local", "path": "var/second"},
    ]
    sandbox.config["backup"]["require_verified_copies"] = 2
    sandbox.write_config()
    # Incompressible, an odd count: the archive's middle byte is in the middle of a member's content.
    files = {f"logs/f{i:02d}.log": os.urandom(200_000) for i in range(11)}
    for rel, data in files.items():
        aged(sandbox, rel.removeprefix("logs/"), data)
    run_ok(sandbox, "maintenance")
    return sandbox.runs()[-1], files


def test_a_corrupt_first_copy_is_passed_over_for_the_next_destination_and_nothing_is_left_half_written(sandbox):
    run_id, files = _two_copies(sandbox)
    corrupt(sandbox.base / "var" / "first" / run_id / "logs.tar.zst")  # one byte, in the middle

    r = sandbox.run("restore", "--run", run_id, "-v")

    assert r.returncode == 0, r.stderr
    assert (
        "passed over destination first: refusing its copy: 'f05.log' does not match its SHA-256 in the local state"
        in r.stderr
    )
    assert f"11 files restored to {sandbox.data / 'logs'} from first (" in r.stderr and "second (" in r.stderr
    assert sandbox.snapshot() == files
    assert _temporaries(sandbox.base) == []
    passed = [e for e in log_records(sandbox) if e["event"] == "destination_passed_over"]
    assert [e["destination"] for e in passed] == ["first"]
    assert 0 < passed[0]["files_restored_so_far"] < 11, "the first copy restored some files before it broke"

    # one file, by its path: the catalogue lists the second copy too
    victim = sandbox.data / "logs" / "f10.log"
    victim.unlink()
    r = sandbox.run("restore", "--file", str(victim), "-v")
    assert r.returncode == 0, r.stderr
    assert "passed over destination first" in r.stderr
    assert f"{victim} restored from run {run_id} on second" in r.stderr
    assert victim.read_bytes() == files["logs/f10.log"]


def test_a_first_destination_that_does_not_hold_the_run_is_passed_over(sandbox, tmp_path):
    run_id, files = _two_copies(sandbox)
    shutil.rmtree(sandbox.base / "var" / "first")  # a disk not mounted

    r = sandbox.run("restore", "--run", run_id, "--to", str(tmp_path / "out"), "-v")

    assert r.returncode == 0, r.stderr
    assert "from second" in r.stderr
    assert _files_under(tmp_path / "out") == files


def test_every_copy_failing_fails_naming_each_and_says_so_in_the_log_it_names(sandbox, tmp_path):
    run_id, _ = _two_copies(sandbox)
    for name in ("first", "second"):
        corrupt(sandbox.base / "var" / name / run_id / "logs.tar.zst")

    r = sandbox.run("restore", "--run", run_id, "--to", str(tmp_path / "out"))

    assert r.returncode == 1, r.stderr
    assert f"run {run_id} could not be restored from any destination (first: " in r.stderr and "; second: " in r.stderr
    assert _temporaries(tmp_path) == []
    log = next(line.removeprefix("Log: ") for line in r.stderr.splitlines() if line.startswith("Log: "))
    failed = [json.loads(line) for line in Path(log).read_text().splitlines()]
    failed = [e for e in failed if e["step"] == "restore" and e["event"] == "restore_failed"]
    assert len(failed) == 1 and failed[0]["level"] == "error" and failed[0]["run"] == run_id
    assert "could not be restored from any destination" in failed[0]["msg"]


def test_a_restore_of_a_run_nobody_holds_writes_its_failure_to_the_log_it_names(sandbox):
    missing = "20200101T000000Z-dead"

    r = sandbox.run("restore", "--run", missing)

    assert r.returncode == 1
    log = next(line.removeprefix("Log: ") for line in r.stderr.splitlines() if line.startswith("Log: "))
    lines = [json.loads(line) for line in Path(log).read_text().splitlines()]
    errors = [e for e in lines if e["level"] == "error"]
    assert [(e["event"], e["step"], e["run"]) for e in errors] == [("restore_failed", "restore", missing)]
    assert missing in errors[0]["msg"] and "does not hold" in errors[0]["msg"]


# -- D14: after a restore -----------------------------------------------------------------------------


def _plan_rules(sandbox) -> dict[str, tuple[str, str, str]]:
    doc = json.loads(run_ok(sandbox, "plan", "--json").stdout)
    return {d["path"]: (d["action"], d["rule"], d["reason"]) for p in doc["policies"] for d in p["decisions"]}


def test_files_restored_into_their_root_are_kept_for_restore_grace_then_expire_again(sandbox):
    aged(sandbox, "a.log", b"alpha\n")
    aged(sandbox, "sub/b.log", b"bravo\n")
    run_ok(sandbox, "maintenance")
    first = sandbox.runs()[-1]

    r = run_ok(sandbox, "restore", "--run", first, "-v")
    assert "scan keeps them until " in r.stderr and "(restore_grace 30d)" in r.stderr
    marks = sandbox.state / "restored.jsonl"
    assert stat.S_IMODE(marks.stat().st_mode) == 0o600
    assert sorted(json.loads(line)["path"] for line in marks.read_text().splitlines()) == ["a.log", "sub/b.log"]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    rules = _plan_rules(sandbox)
    assert rules["a.log"][:2] == ("keep", "restored")
    reason = rules["a.log"][2]
    assert reason.startswith(f"restored {today}; kept until ") and reason.endswith("(restore_grace)")
    assert "keep restored: 2" in run_ok(sandbox, "plan").stdout

    # the same path written anew (as old; maybe the very inode number again) is decided as any other file
    (sandbox.data / "logs" / "sub" / "b.log").unlink()
    aged(sandbox, "sub/b.log", b"bravo, a new file\n", age_days=50)
    run_ok(sandbox, "maintenance")
    second = sandbox.runs()[-1]

    assert sandbox.snapshot() == {"logs/a.log": b"alpha\n"}, "the restored file stayed; the new one expired"
    entries = (sandbox.run_dir(second) / "scan.logs.jsonl").read_text().splitlines()
    scanned = [json.loads(line)["path"] for line in entries]
    assert scanned == ["sub/b.log"]
    runs = [
        json.loads(line)["run"]
        for line in run_ok(
            sandbox, "find", "--file", str(sandbox.data / "logs" / "a.log"), "--json"
        ).stdout.splitlines()
    ]
    assert runs == [first], "find lists the restored file under the run that deleted it, once"

    sandbox.config["restore_grace"] = "1s"  # the grace over: it expires again, after a backup
    sandbox.write_config()
    time.sleep(1.1)
    assert _plan_rules(sandbox)["a.log"][:2] == ("expire", "older_than")


def test_a_restored_file_stays_kept_when_the_config_gives_it_to_another_policy(sandbox):
    """The grace belongs to the file, not to the policy that held it: a policy renamed, or a
    nested policy added over the restored file's directory, must not expire it at once."""
    aged(sandbox, "a.log", b"alpha\n")
    aged(sandbox, "sub/s.log", b"sierra\n")
    run_ok(sandbox, "maintenance")
    run_ok(sandbox, "restore", "--run", sandbox.runs()[-1])
    sandbox.config["policies"][0]["name"] = "logs2"
    sandbox.config["policies"].append(
        {"name": "sub", "root": "data/logs/sub", "include": ["**"], "older_than": "30d", "settle": "1m"}
    )
    sandbox.write_config()

    rules = _plan_rules(sandbox)
    assert rules["a.log"][:2] == ("keep", "restored") and rules["s.log"][:2] == ("keep", "restored")
    run_ok(sandbox, "maintenance")
    assert sandbox.snapshot() == {"logs/a.log": b"alpha\n", "logs/sub/s.log": b"sierra\n"}


def test_restore_under_to_records_nothing_for_scan(sandbox, tmp_path):
    aged(sandbox, "a.log", b"alpha\n")
    run_ok(sandbox, "maintenance")
    r = run_ok(sandbox, "restore", "--run", sandbox.runs()[-1], "--to", str(tmp_path / "out"), "-v")
    assert "restore_grace" not in r.stderr
    assert not (sandbox.state / "restored.jsonl").exists()


def test_restore_grace_is_validated_like_other_durations(sandbox):
    sandbox.config["restore_grace"] = "30 days"
    sandbox.write_config()
    r = sandbox.run("plan")
    assert r.returncode == 78
    assert "restore_grace: expected a duration like 30d" in r.stderr


def test_a_restore_killed_mid_file_leaves_a_temporary_file_that_the_rerun_removes_and_names(sandbox):
    big = os.urandom(6 << 20)  # six 1 MiB chunks; the first member (names are sorted), so nothing is in place yet
    aged(sandbox, "big.log", big)
    aged(sandbox, "small.log", b"small\n")
    run_ok(sandbox, "maintenance")
    run_id = sandbox.runs()[-1]
    logs = sandbox.data / "logs"
    # not this restore's: an operator's file and another name's leftover stay
    aged(sandbox, ".big.log.tmp-restore-mine", b"the operator's")
    aged(sandbox, ".other.log.tmp-restore-0123abcd", b"not a file of this run")

    killed = sandbox.run("restore", "--run", run_id, env={"QTS_OPS_CRASH_AT": "restore.after_chunk:3"})

    assert killed.returncode == -9
    (left,) = [
        p
        for p in logs.iterdir()
        if p.name.startswith(".big.log.tmp-restore-") and p.name != ".big.log.tmp-restore-mine"
    ]
    assert 0 < left.stat().st_size < len(big)
    assert not (logs / "big.log").exists()

    rerun = sandbox.run("restore", "--run", run_id)

    assert rerun.returncode == 0, rerun.stderr
    assert f"removed 1 temporary file(s) an interrupted restore of run {run_id} left: {left}" in rerun.stderr
    assert not left.exists()
    assert sorted(p.name for p in logs.iterdir()) == [
        ".big.log.tmp-restore-mine",
        ".other.log.tmp-restore-0123abcd",
        "big.log",
        "small.log",
    ]
    assert (logs / "big.log").read_bytes() == big
    assert [e["event"] for e in log_records(sandbox) if e["event"] == "leftovers_removed"] == ["leftovers_removed"]


def test_a_restore_killed_after_some_files_is_finished_by_its_rerun(sandbox):
    """The files a killed restore already put back (checked, with their recorded content)
    are not conflicts for its rerun, which restores the rest; a file changed since is."""
    contents = {f"f{i}.log": os.urandom(1 << 20) for i in range(6)}  # one chunk each
    for name, data in contents.items():
        aged(sandbox, name, data)
    run_ok(sandbox, "maintenance")
    run_id = sandbox.runs()[-1]
    logs = sandbox.data / "logs"

    killed = sandbox.run("restore", "--run", run_id, env={"QTS_OPS_CRASH_AT": "restore.after_rename:3"})
    assert killed.returncode == -9
    back = sorted(p.name for p in logs.iterdir() if not p.name.startswith("."))
    assert 0 < len(back) < len(contents)

    rerun = sandbox.run("restore", "--run", run_id, "-v")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(back)} file(s) of run {run_id} are already at the target with their recorded content" in rerun.stderr
    assert {n: (logs / n).read_bytes() for n in contents} == contents

    (logs / "f0.log").write_bytes(b"changed since")
    for name in contents:
        if name != "f0.log":
            (logs / name).unlink()
    again = sandbox.run("restore", "--run", run_id)
    assert again.returncode == 1 and "1 file(s) already exist at the restore target" in again.stderr
    assert sorted(p.name for p in logs.iterdir() if not p.name.startswith(".")) == ["f0.log"]


def test_make_restore_passes_from_other_host_on(sandbox, tmp_path):
    """FROM_OTHER_HOST=1 reaches the script: a run of another root goes into this one's root."""
    aged(sandbox, "a.log", b"alpha\n")
    run_ok(sandbox, "maintenance")
    run_id = sandbox.runs()[-1]
    other = Sandbox(tmp_path / "elsewhere")
    shutil.copytree(sandbox.backups, other.backups)

    refused = make("restore", f"CONFIG={other.config_path}", f"RUN={run_id}")
    told = make("restore", f"CONFIG={other.config_path}", f"RUN={run_id}", "FROM_OTHER_HOST=1")

    assert refused.returncode == 2 and "Error 1" in refused.stderr
    assert f"was backed up from {sandbox.data / 'logs'}, not from {other.data / 'logs'}" in refused.stderr
    assert told.returncode == 0, told.stderr
    assert other.snapshot() == {"logs/a.log": b"alpha\n"}


def test_a_link_in_place_of_the_restored_files_record_is_never_written_through(sandbox, tmp_path):
    aged(sandbox, "a.log", b"alpha\n")
    run_ok(sandbox, "maintenance")
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_bytes(b"")
    (sandbox.state / "restored.jsonl").symlink_to(elsewhere)

    r = sandbox.run("restore", "--run", sandbox.runs()[-1])

    assert r.returncode == 1, r.stderr
    assert f"{sandbox.state / 'restored.jsonl'} is a symbolic link" in r.stderr
    assert elsewhere.read_bytes() == b""
    assert sandbox.snapshot() == {}, "no file goes into its root unrecorded"
    assert _temporaries(sandbox.base) == []
