"""scripts/clean.py alone: refusal, idempotence, and "provably unchanged" before every unlink."""

import json
import os
import shutil

import pytest

from ops.maintenance.cleanup.step import UNLINK_BATCH
from ops.maintenance.cleanup.unlink import marker_above
from ops.state.manifest import JOURNAL

from ._support import RUN_B, chain_to, check_refusals_then_idempotence, decisions, log_records, run_ok, tree


def test_clean_refuses_a_missing_or_tampered_chain_and_reruns_as_a_no_op(sandbox, subtests):
    check_refusals_then_idempotence(sandbox, subtests, "clean")


def test_clean_deletes_only_unchanged_files_and_keeps_each_changed_one_with_its_reason(sandbox, subtests):
    root = sandbox.data / "logs"
    names = [
        "same.log",
        "appended.log",
        "touched.log",
        "chmodded.log",
        "replaced.log",
        "symlinked.log",
        "sub/in-dir-swapped-for-symlink.log",
        "2025/09/a.log",
        "2025/09/b.log",
        "2025/10/c.log",
    ]
    for name in names:
        sandbox.file(name, f"original {name}\n")
    sandbox.file("2025/10/new.log", "new", age_days=0)
    for d in ("2025/09", "2025/10", "2025"):
        os.utime(root / d, (1_600_000_000, 1_600_000_000))
    outside = sandbox.file("elsewhere/target.log", "outside the root; never deleted\n", root="other")
    decoy_dir = sandbox.data / "other" / "decoy"
    decoy_dir.mkdir()
    (decoy_dir / "in-dir-swapped-for-symlink.log").write_bytes(b"outside, same name as the one in sub/\n")
    chain_to(sandbox, "verify", RUN_B)

    # After verify, before clean: the core (or a person) changes things under the root.
    with open(root / "appended.log", "ab") as f:
        f.write(b"one more line\n")
    os.utime(root / "touched.log")
    os.chmod(root / "chmodded.log", 0o640)
    st = os.stat(root / "replaced.log")
    fresh = root / "replaced.log.new"
    fresh.write_bytes((root / "replaced.log").read_bytes())  # same name, content and mtime: new inode
    os.utime(fresh, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(fresh, root / "replaced.log")
    os.unlink(root / "symlinked.log")
    os.symlink(outside, root / "symlinked.log")
    os.rename(root / "sub", sandbox.data / "other" / "moved-sub")
    os.symlink(decoy_dir, root / "sub")
    outside_before = tree(sandbox.data / "other")

    result = sandbox.run("clean", "--run", RUN_B)
    assert result.returncode == 0, result.stderr
    logged = {d["path"]: d for d in decisions(sandbox, RUN_B)}
    assert sorted(logged) == sorted(names), "one decision line per file"

    expected = {
        "same.log": ("deleted", "unchanged since backup"),
        "2025/09/a.log": ("deleted", "unchanged since backup"),
        "2025/09/b.log": ("deleted", "unchanged since backup"),
        "2025/10/c.log": ("deleted", "unchanged since backup"),
        "appended.log": ("kept", "changed since backup (size, mtime, ctime)"),
        "touched.log": ("kept", "changed since backup (mtime, ctime)"),
        "chmodded.log": ("kept", "changed since backup (ctime)"),
        "replaced.log": ("kept", "changed since backup (inode, ctime)"),
        "symlinked.log": ("kept", "no longer a regular file"),
        "sub/in-dir-swapped-for-symlink.log": ("kept", "symlink"),
    }
    for name, (event, reason) in expected.items():
        with subtests.test(msg=name):
            assert logged[name]["event"] == event
            assert reason in logged[name]["reason"]
            assert logged[name]["msg"].startswith(f"{name}: ")
            assert os.path.lexists(root / name) == (event == "kept")

    assert (root / "appended.log").read_bytes() == b"original appended.log\none more line\n"
    assert os.readlink(root / "symlinked.log") == str(outside)
    assert os.readlink(root / "sub") == str(decoy_dir)
    assert tree(sandbox.data / "other") == outside_before, "nothing outside the root was touched"
    journal = (sandbox.run_dir(RUN_B) / "clean.journal.jsonl").read_text().splitlines()
    assert len(journal) == len(names)
    # Emptied directories stay unless the policy sets prune_empty_dirs (the core may write there).
    assert (root / "2025/09").is_dir()
    assert (root / "2025/10/new.log").read_bytes() == b"new"
    assert root.is_dir()


def _clean_killed_after_its_first_batch(sandbox) -> list[str]:
    """Two and a bit batches of files, verified; clean killed part-way into its second batch."""
    names = [f"many/f{i:04d}.log" for i in range(UNLINK_BATCH * 2 + 50)]
    for name in names:
        sandbox.file(name, f"content of {name}\n")
    chain_to(sandbox, "verify", RUN_B)
    killed = sandbox.run("clean", "--run", RUN_B, env={"QTS_OPS_CRASH_AT": f"clean.after_unlink:{UNLINK_BATCH + 10}"})
    assert killed.returncode != 0
    return names


def test_a_killed_clean_resumes_from_its_journal_and_a_torn_last_line_is_cut_off(sandbox):
    """The journal is written a batch at a time and fsynced every JOURNAL_SYNC_EVERY lines;
    a rerun re-reads the complete lines (skipping their work), cuts off a torn one, and
    decides the rest again: the files the killed attempt unlinked without a journal line
    read as gone, none is deleted twice, and the catalogue holds every deletion."""
    names = _clean_killed_after_its_first_batch(sandbox)
    journal = sandbox.run_dir(RUN_B) / JOURNAL
    complete = journal.read_bytes().count(b"\n")
    assert 1 <= complete < UNLINK_BATCH + 10, "the first batch's lines were not written before the kill"
    with open(journal, "ab") as f:
        f.write(b'{"policy":"logs","path":"many/f')  # a line torn by the crash

    run_ok(sandbox, "clean", "--run", RUN_B)
    resumed = [r for r in log_records(sandbox) if r["event"] == "resume" and r.get("run") == RUN_B]
    assert [r["msg"] for r in resumed] == [f"resuming after {complete} decisions already journaled"]
    assert journal.read_bytes().count(b"\n") == len(names)
    # (The emptied directory stays: the killed attempt's unlinks made it look freshly touched.)
    assert [k for k, v in tree(sandbox.data / "logs").items() if v[0] != "dir"] == []
    outcomes: dict[str, list[str]] = {}
    for d in decisions(sandbox, RUN_B):
        outcomes.setdefault(d["path"], []).append(d["event"])
    assert all(events.count("deleted") <= 1 and "kept" not in events for events in outcomes.values()), outcomes
    # Journaled before the kill: decided once, never looked at again.
    journaled = names[:complete]
    assert all(outcomes[n] == ["deleted"] for n in journaled)
    catalogue = (sandbox.state / "catalogue" / f"{RUN_B}.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["rel"] for line in catalogue) == sorted(names)


def test_a_directory_emptied_by_two_policies_of_one_root_is_removed(sandbox):
    """Two policies may share a root (logs and journals side by side): a directory whose
    files both of them deleted is pruned once the second is done, judged by its mtime from
    before the first one's unlinks."""
    sandbox.config["policies"][0]["prune_empty_dirs"] = True
    sandbox.config["policies"].append(
        {
            "name": "journals",
            "root": "data/logs",
            "include": ["**/*.jsonl"],
            "older_than": "30d",
            "settle": "10m",
            "keep_last": 0,
            "missing_ok": False,
            "prune_empty_dirs": True,
        }
    )
    sandbox.write_config()
    root = sandbox.data / "logs"
    sandbox.file("2025/09/a.log", "a log\n")
    sandbox.file("2025/09/b.jsonl", "a journal\n")
    sandbox.file("2025/keep.log", "young\n", age_days=0)
    for d in ("2025/09", "2025"):
        os.utime(root / d, (1_600_000_000, 1_600_000_000))
    run_ok(sandbox, "maintenance")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["2025", "2025/keep.log"]


def _archive(sandbox):
    return sandbox.backups / RUN_B / "logs.tar.zst"


def _remove_archive(sandbox):
    os.rename(_archive(sandbox), sandbox.base / "aside")
    return lambda: os.rename(sandbox.base / "aside", _archive(sandbox))


def _truncate_archive(sandbox):
    saved = _archive(sandbox).read_bytes()
    with open(_archive(sandbox), "r+b") as f:
        f.truncate(len(saved) - 1)
    return lambda: _archive(sandbox).write_bytes(saved)


def _truncate_sums(sandbox):
    sums = sandbox.backups / RUN_B / "logs.sha256"
    saved = sums.read_bytes()
    sums.write_bytes(b"")  # restore would refuse the run: this file no longer matches SHA256SUMS
    return lambda: sums.write_bytes(saved)


def _archive_as_symlink(sandbox):
    os.rename(_archive(sandbox), sandbox.base / "aside")
    os.symlink(sandbox.base / "aside", _archive(sandbox))  # same size through the link, but not the file verified

    def put_back():
        os.unlink(_archive(sandbox))
        os.rename(sandbox.base / "aside", _archive(sandbox))

    return put_back


def _run_dir_as_symlink(sandbox):
    os.rename(sandbox.backups / RUN_B, sandbox.base / "aside")
    os.symlink(sandbox.base / "aside", sandbox.backups / RUN_B)  # the same files, but held elsewhere

    def put_back():
        os.unlink(sandbox.backups / RUN_B)
        os.rename(sandbox.base / "aside", sandbox.backups / RUN_B)

    return put_back


def _unmount_destination(sandbox):
    os.rename(sandbox.backups, sandbox.base / "unmounted")
    return lambda: os.rename(sandbox.base / "unmounted", sandbox.backups)


def _other_manifest(sandbox):
    manifest = sandbox.backups / RUN_B / "MANIFEST.json"
    saved = manifest.read_bytes()
    manifest.write_bytes(saved.replace(b'"schema": 1', b'"schema": 1 '))
    return lambda: manifest.write_bytes(saved)


@pytest.mark.parametrize(
    "lose_copy",
    [
        _remove_archive,
        _truncate_archive,
        _truncate_sums,
        _archive_as_symlink,
        _run_dir_as_symlink,
        _unmount_destination,
        _other_manifest,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_clean_deletes_nothing_when_the_verified_copy_is_no_longer_in_place(sandbox, lose_copy):
    """Verify checked the copy; clean may run much later (by hand, or resumed the next
    night). A copy lost or changed since then no longer counts toward the quorum."""
    for i in range(5):
        sandbox.file(f"d/f{i}.log", f"content {i}\n")
    chain_to(sandbox, "verify", RUN_B)
    before = sandbox.snapshot()
    put_back = lose_copy(sandbox)

    refused = sandbox.run("clean", "--run", RUN_B)

    assert refused.returncode == 1, refused.stderr
    assert "nothing was deleted" in refused.stderr and f"make clean RUN={RUN_B}" in refused.stderr
    assert "0 of 1 verified copies still in place, 1 required" in refused.stderr
    assert f"Not in place: local ({sandbox.backups})" in refused.stderr, "the message names the destination and why"
    assert sandbox.snapshot() == before
    assert decisions(sandbox, RUN_B) == []
    assert not (sandbox.run_dir(RUN_B) / "clean.ok.json").exists()
    assert [r["destination"] for r in log_records(sandbox) if r["event"] == "copy_missing"] == ["local"]

    put_back()
    run_ok(sandbox, "clean", "--run", RUN_B)
    assert sandbox.snapshot() == {}
    catalogue = (sandbox.state / "catalogue" / f"{RUN_B}.jsonl").read_text().splitlines()
    assert [json.loads(line)["destinations"] for line in catalogue] == [["local"]] * 5


def _two_local_destinations(sandbox, quorum: int) -> None:
    sandbox.config["backup"]["require_verified_copies"] = quorum
    sandbox.config["backup"]["destinations"].append({"name": "second", "type": "local", "path": "var/second"})
    sandbox.write_config()


def test_with_the_quorum_still_met_clean_deletes_and_reports_the_copy_that_is_gone(sandbox):
    _two_local_destinations(sandbox, quorum=1)
    for i in range(3):
        sandbox.file(f"f{i}.log", f"content {i}\n")
    chain_to(sandbox, "verify", RUN_B)
    shutil.rmtree(sandbox.base / "var/second" / RUN_B)

    run_ok(sandbox, "clean", "--run", RUN_B)

    assert sandbox.snapshot() == {}
    missing = [r for r in log_records(sandbox) if r["event"] == "copy_missing"]
    assert [r["destination"] for r in missing] == ["second"] and "has no MANIFEST.json" in missing[0]["msg"]
    clean_ok = json.loads((sandbox.run_dir(RUN_B) / "clean.ok.json").read_bytes())
    assert list(clean_ok["copies_missing"]) == ["second"]
    catalogue = (sandbox.state / "catalogue" / f"{RUN_B}.jsonl").read_text().splitlines()
    assert [json.loads(line)["destinations"] for line in catalogue] == [["local"]] * 3
    status = run_ok(sandbox, "status")
    assert "its verified copy on second was no longer in place" in status.stdout + status.stderr


def test_a_copy_lost_after_a_crash_in_clean_stops_the_rest_and_says_what_already_happened(sandbox):
    names = _clean_killed_after_its_first_batch(sandbox)
    journaled = (sandbox.run_dir(RUN_B) / JOURNAL).read_bytes().count(b"\n")
    left = sandbox.snapshot()
    put_back = _unmount_destination(sandbox)

    refused = sandbox.run("clean", "--run", RUN_B)

    assert refused.returncode == 1, refused.stderr
    assert f"nothing more was deleted; the {journaled} decisions of an earlier attempt" in refused.stderr
    assert "--new-run" not in refused.stderr, "a new run would never catalogue what this one deleted"
    assert sandbox.snapshot() == left
    put_back()
    run_ok(sandbox, "clean", "--run", RUN_B)
    catalogue = (sandbox.state / "catalogue" / f"{RUN_B}.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["rel"] for line in catalogue) == sorted(names)


def test_a_copy_lost_after_clean_finished_leaves_the_rerun_a_no_op(sandbox):
    sandbox.file("a.log", "a\n")
    chain_to(sandbox, "clean", RUN_B)
    _unmount_destination(sandbox)

    run_ok(sandbox, "clean", "--run", RUN_B)

    assert [r for r in log_records(sandbox) if r["event"] == "copy_missing"] == []


def test_an_ops_keep_put_down_after_scan_protects_the_files_beneath_it_at_clean(sandbox):
    """Protection beats every other rule, up to the unlink: a marker an operator puts down
    between verify and clean keeps everything beneath it, in its directory and deeper."""
    sandbox.file("a.log", "a\n", age_days=100)
    sandbox.file("sub/s.log", "s\n", age_days=100)
    sandbox.file("sub/deeper/d.log", "d\n", age_days=100)
    for step in ("scan", "backup", "verify"):
        run_ok(sandbox, step)
    (sandbox.data / "logs" / "sub" / ".ops-keep").write_text("")

    run_ok(sandbox, "clean")
    assert sorted(sandbox.snapshot()) == ["logs/sub/.ops-keep", "logs/sub/deeper/d.log", "logs/sub/s.log"]
    kept = {r["path"]: r["reason"] for r in log_records(sandbox) if r.get("event") == "kept"}
    assert kept == {p: "protected by sub/.ops-keep (put there since scan)" for p in ("sub/s.log", "sub/deeper/d.log")}


class _MarkerAt:
    """Stands in for ops.sys.paths.Beneath in the one call the .ops-keep look makes (lstat):
    a tree where only ``marker`` exists. Deeper than a real test tree can cheaply be."""

    def __init__(self, marker: str | None):
        self.marker = marker
        self.looked: list[str] = []

    def lstat(self, relpath: str):
        self.looked.append(relpath)
        if relpath != self.marker:
            raise FileNotFoundError(relpath)
        return os.stat(__file__)  # any regular file's stat


def test_the_ops_keep_look_up_a_tree_deeper_than_the_recursion_limit_is_a_loop():
    deep = "/".join(["d"] * 5000)
    assert marker_above(_MarkerAt(None), deep, {}) is None
    marker = "/".join(["d"] * 10) + "/.ops-keep"
    known: dict = {}
    beneath = _MarkerAt(marker)
    assert marker_above(beneath, deep, known) == marker
    looked = len(beneath.looked)
    assert marker_above(beneath, deep + "/e", known) == marker and len(beneath.looked) == looked  # cached
