"""A run is finished only under the configuration that scanned it (invariant 1).

Two configs may share a state directory: each continues and acts on its own runs only.
A config whose policies, destinations or quorum changed since a run was scanned never
finishes that run: maintenance leaves it and starts a new one, a step named by hand
refuses (exit 2). Each case is what an operator did on a real host.
"""

import json
import os
import socket

import yaml

from ._support import log_records, run_ok

OLD = 100  # days: expired under every policy here


def _config(sandbox, name: str, policies: list[dict], quorum: int = 1, extra_dests=()) -> str:
    doc = {
        "version": 1,
        "backup": {
            "require_verified_copies": quorum,
            "destinations": [{"name": "local", "type": "local", "path": "var/backups"}, *extra_dests],
        },
        "policies": policies,
    }
    path = sandbox.base / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def _policy(name: str) -> dict:
    return {"name": name, "root": f"data/{name}", "include": ["**"], "older_than": "30d", "settle": "1m"}


def _files(sandbox, root: str) -> list[str]:
    for i in range(3):
        sandbox.file(f"{i}.dat", f"{root} {i}\n", age_days=OLD, root=root)
    return sorted(os.listdir(sandbox.data / root))


def _run(sandbox, config: str, script: str, *args: str):
    sandbox.config_path = sandbox.base / os.path.basename(config)
    return sandbox.run(script, *args)


def _catalogued(sandbox) -> dict[str, list[str]]:
    out = {}
    for name in sorted(n for n in os.listdir(sandbox.state / "catalogue") if n.endswith(".jsonl")):
        for line in (sandbox.state / "catalogue" / name).read_text().splitlines():
            entry = json.loads(line)
            out.setdefault(entry["policy"], []).append(entry["rel"])
    return out


def test_a_second_config_sharing_the_state_never_finishes_the_first_ones_run(sandbox):
    """ticks.yaml needs two copies and its second destination is broken; logs.yaml runs
    next on the same state. The ticks files must stay: their run had one copy."""
    ticks = _config(
        sandbox,
        "ticks.yaml",
        [_policy("ticks")],
        quorum=2,
        extra_dests=[{"name": "second", "type": "local", "path": "mnt/second"}],
    )
    logs = _config(sandbox, "logs.yaml", [_policy("logs")])
    (sandbox.base / "mnt").mkdir()
    (sandbox.base / "mnt" / "second").touch()  # a file where the directory should be: that destination fails
    tick_files, log_files = _files(sandbox, "ticks"), _files(sandbox, "logs")
    ticks_before = {n: (sandbox.data / "ticks" / n).read_bytes() for n in tick_files}

    first = _run(sandbox, ticks, "maintenance")
    assert first.returncode == 1, first.stderr
    assert "1 verified copies (local), 2 required; nothing was deleted" in first.stderr
    ticks_run = sandbox.runs()[-1]

    second = _run(sandbox, logs, "maintenance")
    assert second.returncode == 0, second.stderr
    assert {n: (sandbox.data / "ticks" / n).read_bytes() for n in tick_files} == ticks_before
    assert os.listdir(sandbox.data / "logs") == []
    assert sandbox.runs()[-1] != ticks_run
    assert _catalogued(sandbox) == {"logs": log_files}

    # ticks.yaml's own next run still holds out for two copies; its files stay.
    again = _run(sandbox, ticks, "maintenance")
    assert again.returncode == 1, again.stderr
    assert sorted(os.listdir(sandbox.data / "ticks")) == tick_files
    # Named by hand, another config's run is refused and says whose it is.
    clean = _run(sandbox, logs, "clean", "--run", ticks_run)
    assert clean.returncode == 2, clean.stderr
    assert f"scanned under another config file, {ticks}" in clean.stderr
    assert sorted(os.listdir(sandbox.data / "ticks")) == tick_files


def test_a_policy_removed_after_its_run_was_copied_is_not_deleted_by_that_run(sandbox):
    """The run is scanned, backed up and verified with two policies; the operator then
    drops one from retention.yaml. Its files must stay, though the run's copies verify."""
    cfg = _config(sandbox, "retention.yaml", [_policy("logs"), _policy("dumps")])
    _files(sandbox, "logs")
    dump_files = _files(sandbox, "dumps")
    for step in ("scan", "backup", "verify"):
        run_ok(sandbox, step)
    run_id = sandbox.runs()[-1]
    _config(sandbox, "retention.yaml", [_policy("logs")])

    clean = _run(sandbox, cfg, "clean", "--run", run_id)
    assert clean.returncode == 2, clean.stderr
    assert "has changed since it was scanned" in clean.stderr and "--new-run" in clean.stderr
    assert sorted(os.listdir(sandbox.data / "dumps")) == dump_files
    assert len(os.listdir(sandbox.data / "logs")) == 3

    run_ok(sandbox, "maintenance")
    assert sorted(os.listdir(sandbox.data / "dumps")) == dump_files, "the dropped policy's files stay"
    assert os.listdir(sandbox.data / "logs") == []
    assert sandbox.runs()[-1] != run_id
    left = [r for r in log_records(sandbox) if r["event"] == "not_continued"]
    assert len(left) == 1 and f"run {run_id} is left unfinished" in left[0]["msg"]
    assert not (sandbox.run_dir(run_id) / "clean.ok.json").exists()


def test_a_destination_removed_between_verify_and_clean_stops_that_run(sandbox):
    second = {"name": "second", "type": "local", "path": "var/second"}
    cfg = _config(sandbox, "retention.yaml", [_policy("logs")], quorum=2, extra_dests=[second])
    names = _files(sandbox, "logs")
    for step in ("scan", "backup", "verify"):
        run_ok(sandbox, step)
    _config(sandbox, "retention.yaml", [_policy("logs")], quorum=1)

    for script in ("clean", "maintenance"):
        r = _run(sandbox, cfg, script, *(("--run", sandbox.runs()[0]) if script == "clean" else ()))
        if script == "clean":
            assert r.returncode == 2, r.stderr
            assert sorted(os.listdir(sandbox.data / "logs")) == names
        else:
            assert r.returncode == 0, r.stderr  # a new run, scanned and copied under the new rules
    assert len(sandbox.runs()) == 2
    assert not (sandbox.run_dir(sandbox.runs()[0]) / "clean.ok.json").exists()


def test_the_scan_manifest_names_the_host_config_and_rules_and_other_settings_do_not_orphan_a_run(sandbox):
    sandbox.file("a.log", "a\n", age_days=OLD)
    run_ok(sandbox, "scan")
    run_ok(sandbox, "backup")
    scanned = json.loads((sandbox.run_dir() / "scan.ok.json").read_text())["identity"]
    assert scanned["host"] == socket.gethostname()
    assert scanned["config"] == str(sandbox.config_path.resolve())
    assert len(scanned["digest"]) == 64
    # Where logs and metrics go, and the hook's timeout, decide nothing about deletion.
    sandbox.config.update(log_dir="var/log2", metrics_file="var/metrics.prom", on_failure_timeout="5s")
    sandbox.write_config()
    run_ok(sandbox, "verify")
    run_ok(sandbox, "clean")
    assert not (sandbox.data / "logs" / "a.log").exists()


def test_a_crashed_scan_is_taken_up_again_by_the_next_maintenance(sandbox):
    sandbox.file("a.log", "a\n", age_days=OLD)
    crashed = sandbox.run("scan", env={"QTS_OPS_CRASH_AT": "scan.before_manifest"})
    assert crashed.returncode != 0
    run_id = sandbox.runs()[-1]
    run_ok(sandbox, "maintenance")
    assert sandbox.runs() == [run_id]
    assert (sandbox.run_dir(run_id) / "clean.ok.json").exists()


def test_what_a_killed_clean_deleted_is_catalogued_when_its_run_is_left(sandbox):
    """clean killed part-way, then the config changes: the run is left, and the files its
    clean had already deleted (journaled, or unlinked just ahead of the journal) must still
    be found by make find, not only by whoever knows the run id."""
    cfg = _config(sandbox, "retention.yaml", [_policy("logs")])
    names = [f"d{i // 6:03d}/f{i:04d}.dat" for i in range(600)]  # batches of one directory: 6 files
    for name in names:
        sandbox.file(name, f"{name}\n", age_days=OLD, root="logs")
    for step in ("scan", "backup", "verify"):
        run_ok(sandbox, step)
    left = sandbox.runs()[-1]
    killed = sandbox.run("clean", env={"QTS_OPS_CRASH_AT": "clean.after_unlink:300"})
    assert killed.returncode != 0
    gone = sorted(n for n in names if not (sandbox.data / "logs" / n).exists())
    assert 300 <= len(gone) < len(names)

    _config(sandbox, "retention.yaml", [dict(_policy("logs"), older_than="60d")])
    r = _run(sandbox, cfg, "maintenance")
    assert r.returncode == 0, r.stderr

    catalogued = [json.loads(line) for line in (sandbox.state / "catalogue" / f"{left}.jsonl").read_text().splitlines()]
    assert sorted(e["rel"] for e in catalogued) == gone
    found = sandbox.run("find", "--file", str(sandbox.data / "logs" / gone[0]), "--json")
    assert found.returncode == 0 and json.loads(found.stdout.splitlines()[0])["run"] == left
    status = sandbox.run("status")
    assert "What its clean deleted before it stopped is in the catalogue" in status.stdout + status.stderr


def test_a_run_whose_root_changed_device_or_inode_is_left_for_a_new_run(sandbox):
    """A reboot can give the disk under a root another device number (device-mapper numbers
    its devices as they come up), and a root can be replaced by a new directory. Backup and
    clean refuse a root that is not the directory scanned, so a resumed run failed every
    night until an operator said --new-run. The next maintenance now leaves it and starts a
    new run, which scans the root as it is (found by the power-cut campaign, whose layer
    came back under another device number)."""
    for i in range(3):
        sandbox.file(f"{i}.log", f"log {i}\n", age_days=OLD)
    run_ok(sandbox, "scan")
    left = sandbox.runs()[-1]
    root = sandbox.data / "logs"
    os.rename(root, root.with_name("logs.old"))  # the same files in a new directory
    root.mkdir()
    for name in os.listdir(root.with_name("logs.old")):
        os.rename(root.with_name("logs.old") / name, root / name)
    refused = sandbox.run("backup", "--run", left)
    assert refused.returncode == 1 and "is not the directory that was scanned" in refused.stderr

    r = sandbox.run("maintenance")
    assert r.returncode == 0, r.stderr
    assert sandbox.runs()[-1] != left and (sandbox.run_dir() / "clean.ok.json").exists()
    assert sorted(os.listdir(root)) == []
    left_why = [e for e in log_records(sandbox) if e.get("event") == "not_continued"]
    assert left_why and f"run {left} is left unfinished: policy logs's root" in left_why[-1]["msg"]
    assert "not the directory it scanned" in left_why[-1]["msg"]
