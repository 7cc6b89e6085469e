"""scrub re-reads the copies and repairs one from another, through the real scripts on two
local destinations: a rotted archive comes back byte-identical (and GNU sha256sum agrees),
a run deleted from one destination is copied back, a run with no intact copy left makes
scrub exit 1 naming it (and find says so), and the slice of a night is the cycle's share."""

import hashlib
import json
import os
import shutil
import subprocess

import pytest
from e2e_support import tmpfs

from ops.state.scrubbed import STATE
from tools.sandbox import SCRIPTS


def _tree(path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in path.rglob("*") if p.is_file()
    }


@pytest.fixture
def two_copies(sandbox):
    sandbox.config["backup"]["destinations"] = [
        {"name": "first", "type": "local", "path": "var/first"},
        {"name": "second", "type": "local", "path": "var/second"},
    ]
    sandbox.config["backup"]["require_verified_copies"] = 2
    sandbox.write_config()
    for i in range(5):
        sandbox.file(f"f{i}.log", os.urandom(100_000))
    assert sandbox.run("maintenance").returncode == 0
    run_id = sandbox.runs()[-1]
    first, second = sandbox.base / "var/first" / run_id, sandbox.base / "var/second" / run_id
    assert _tree(first) == _tree(second)
    return sandbox, run_id, first, second


def _flip(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_rotted_archive_is_repaired_byte_identical_from_the_other_copy(two_copies):
    sandbox, run_id, first, second = two_copies
    good = _tree(first)
    _flip(second / "logs.tar.zst")
    r = sandbox.run("scrub", "--all", "-v")
    assert r.returncode == 0, r.stderr
    assert "second: 1 checked, 1 damaged, 1 repaired" in r.stderr
    assert _tree(second) == good
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=second, check=True)
    aside = [p.name for p in second.parent.iterdir() if p.name.startswith(f".{run_id}.damaged-")]
    assert len(aside) == 1, "the damaged copy was not kept aside"
    state = json.loads((sandbox.state / STATE).read_text())
    assert state["checked"]["second"][run_id]["state"] == "repaired"
    assert state["checked"]["first"][run_id]["state"] == "ok"
    both = (_tree(first.parent), _tree(second.parent))
    again = sandbox.run("scrub", "--all", "-v")  # running twice changes nothing
    assert again.returncode == 0 and "0 damaged, 0 repaired" in again.stderr, again.stderr
    assert (_tree(first.parent), _tree(second.parent)) == both


def test_a_run_deleted_from_one_destination_is_copied_back(two_copies):
    sandbox, run_id, first, second = two_copies
    shutil.rmtree(second)
    left = second.parent / f".{run_id}.tmp-999999"  # a repair killed part-way, by another process
    left.mkdir(mode=0o700)
    (left / "logs.tar.zst").write_bytes(b"half an archive")
    r = sandbox.run("scrub", "--all", "-v")
    assert r.returncode == 0, r.stderr
    assert _tree(second) == _tree(first)
    assert not left.exists(), "an interrupted repair's staging is removed by the next repair of that run"


def test_with_no_intact_copy_left_scrub_exits_1_naming_the_run_and_find_says_so(two_copies):
    sandbox, run_id, first, second = two_copies
    _flip(first / "logs.tar.zst")
    shutil.rmtree(second)
    r = sandbox.run("scrub", "--all")
    assert r.returncode == 1
    assert f"no intact copy is left of 1 run(s): run {run_id}:" in r.stderr
    assert "first logs.tar.zst" in r.stderr and "second does not hold the run any more" in r.stderr
    found = sandbox.run("find", "--file", str(sandbox.data / "logs/f0.log"), env={"COLUMNS": "250"})
    assert "NO INTACT COPY" in found.stdout


def test_a_run_only_one_destination_ever_held_is_not_missing_from_the_other(sandbox):
    sandbox.file("a.log", "only on first\n")
    assert sandbox.run("maintenance").returncode == 0
    sandbox.config["backup"]["destinations"].append({"name": "later", "type": "local", "path": "var/later"})
    sandbox.write_config()
    r = sandbox.run("scrub", "--all", "-v")
    assert r.returncode == 0, r.stderr
    assert not (sandbox.base / "var/later").exists() or not os.listdir(sandbox.base / "var/later")


def test_a_night_reads_the_cycles_share_oldest_first_and_maintenance_ends_with_it(sandbox):
    for i in range(10):
        sandbox.file(f"{i}.log", f"{i}\n")
        assert sandbox.run("scan").returncode == 0 and sandbox.run("backup").returncode == 0
        assert sandbox.run("verify").returncode == 0 and sandbox.run("clean").returncode == 0
    sandbox.config["scrub"] = {"cycle": "5d"}  # 10 runs: 2 a night
    sandbox.write_config()
    r = subprocess.run(
        ["make", "-s", "-C", str(SCRIPTS.parent), "scrub", f"CONFIG={sandbox.config_path}"],
        capture_output=True,
        text=True,
        env={**os.environ, "QTS_OPS_PRIORITY": "normal", "VERBOSE": "1"},
    )
    assert r.returncode == 0 and "local: 2 checked" in r.stderr, r.stderr
    checked = json.loads((sandbox.state / STATE).read_text())["checked"]["local"]
    assert sorted(checked) == sandbox.runs()[:2]
    assert sandbox.run("maintenance").returncode == 0  # a night later, as far as scrub can tell: the next share
    state = json.loads((sandbox.state / STATE).read_text())
    assert len(state["checked"]["local"]) >= 3
    r = sandbox.run("scrub", "--all", "-v")
    assert "local: 10 checked, 0 damaged" in r.stderr


def test_status_and_the_metrics_show_what_scrub_found(two_copies):
    sandbox, run_id, first, second = two_copies
    sandbox.config["metrics_file"] = "var/metrics/qts.prom"
    sandbox.write_config()
    _flip(first / "logs.tar.zst")
    shutil.rmtree(second)
    assert sandbox.run("scrub", "--all").returncode == 1
    metrics = (sandbox.base / "var/metrics/qts.prom").read_text()
    assert 'qts_ops_scrub_damaged_total{destination="first"} 1' in metrics
    assert 'qts_ops_scrub_unrepairable_total{destination="second"} 1' in metrics
    assert "qts_ops_runs_without_intact_copy 1" in metrics
    assert 'qts_ops_scrub_oldest_check_age_seconds{destination="first"}' in metrics
    info = json.loads(sandbox.run("status", "--json").stdout)
    assert any(f"run {run_id}: scrub found no intact copy" in p for p in info["problems"])
    assert info["destinations"]["first"]["oldest_check_run"] == run_id


def test_a_run_of_another_host_on_the_destination_is_neither_checked_nor_repaired(two_copies):
    sandbox, run_id, first, second = two_copies
    theirs = "20250101T000000Z-0bad"
    for d in (first, second):
        other = d.parent / theirs
        shutil.copytree(d, other)
        doc = json.loads((other / "MANIFEST.json").read_text())
        doc["run_id"], doc["host"], doc["identity"]["host"] = theirs, "another-host", "another-host"
        (other / "MANIFEST.json").write_text(json.dumps(doc))
        sums = (other / "SHA256SUMS").read_text().splitlines()
        digest = hashlib.sha256((other / "MANIFEST.json").read_bytes()).hexdigest()
        (other / "SHA256SUMS").write_text(
            "".join(f"{digest}  MANIFEST.json\n" if line.endswith("MANIFEST.json") else line + "\n" for line in sums)
        )
    _flip(second.parent / theirs / "logs.tar.zst")
    before = _tree(second.parent / theirs)
    r = sandbox.run("scrub", "--all", "-v")
    assert r.returncode == 0, r.stderr
    assert "second: 1 checked, 0 damaged" in r.stderr
    assert _tree(second.parent / theirs) == before, "another host's run was written to"


def _as_run(src, dst, run_id) -> None:
    """``src`` copied to ``dst`` as if it were run ``run_id``: its MANIFEST.json and
    SHA256SUMS made to agree, so only the files it holds give it away."""
    shutil.copytree(src, dst)
    doc = json.loads((dst / "MANIFEST.json").read_text())
    doc["run_id"] = run_id
    (dst / "MANIFEST.json").write_text(json.dumps(doc))
    digest = hashlib.sha256((dst / "MANIFEST.json").read_bytes()).hexdigest()
    lines = (dst / "SHA256SUMS").read_text().splitlines()
    (dst / "SHA256SUMS").write_text(
        "".join(f"{digest}  MANIFEST.json\n" if line.endswith("MANIFEST.json") else line + "\n" for line in lines)
    )


def test_a_copy_of_another_run_under_this_ones_name_is_no_copy_even_once_its_state_is_compacted(two_copies):
    sandbox, first_run, first, second = two_copies
    sandbox.config["compact_runs_after"] = "0s"
    sandbox.write_config()
    sandbox.file("later.log", os.urandom(50_000))
    assert sandbox.run("maintenance").returncode == 0
    later = sandbox.runs()[-1]
    assert not (sandbox.state / "runs" / first_run).exists(), "the first run's state was not compacted"
    shutil.rmtree(second)
    _as_run(second.parent / later, second, first_run)  # the later run, renamed to the first one's id
    _flip(first / "logs.tar.zst")
    genuine = _tree(first)
    r = sandbox.run("scrub", "--all")
    assert r.returncode == 1 and f"no intact copy is left of 1 run(s): run {first_run}:" in r.stderr, r.stderr
    assert "lacks" in r.stderr
    assert _tree(first) == genuine, "the genuine copy was replaced by another run's"


def test_a_run_whose_state_was_edited_is_said_and_the_others_are_still_scrubbed(two_copies):
    sandbox, run_id, first, second = two_copies
    sandbox.file("later.log", os.urandom(50_000))
    assert sandbox.run("maintenance").returncode == 0
    later = sandbox.runs()[-1]
    scan = sandbox.state / "runs" / run_id / "scan.ok.json"
    scan.write_text(scan.read_text().replace('"finished_at": "', '"finished_at": "1'))
    _flip(second.parent / later / "logs.tar.zst")
    r = sandbox.run("scrub", "--all", "-v")
    assert r.returncode == 0, r.stderr
    assert f"run {run_id} not checked" in r.stderr and "1 repaired" in r.stderr
    assert _tree(second.parent / later) == _tree(first.parent / later)


def test_a_repair_that_fails_is_said_and_leaves_the_damaged_copy_in_place(two_copies):
    """The second destination on a real tmpfs with room for its copy but not for a second
    one: the repair's staging meets ENOSPC."""
    sandbox, run_id, first, second = two_copies
    held = {p.name: p.read_bytes() for p in second.iterdir()}
    used = sum(len(b) for b in held.values())
    with tmpfs(second.parent, f"{used + 64 * 1024}"):
        second.mkdir()
        for name, data in held.items():
            (second / name).write_bytes(data)
        _flip(second / "logs.tar.zst")
        damaged = _tree(second)
        r = sandbox.run("scrub", "--all")
        assert r.returncode == 0, r.stderr  # an intact copy is left on first
        assert f"repair of run {run_id} on second from first failed" in r.stderr
        assert _tree(second) == damaged, "the damaged copy was moved or changed by a repair that failed"
        assert not [p for p in second.parent.iterdir() if p.name.startswith(".")], "a staging was left"
        problems = json.loads(sandbox.run("status", "--json").stdout)["problems"]
        assert any(f"run {run_id} on second: scrub found it damaged" in p for p in problems), problems
