"""One chain at a time: concurrent starts exit 75 and change nothing, and the lock dies
with a SIGKILLed holder."""

import json
import threading
import time

from e2e_support import assert_nothing_lost

from tools.sandbox import kill_chain, lock_is_free, log_events, popen, published_runs

# Enough files that the winning chain holds the lock well past the start of every rival
# (a second or two of work, against well under a second for a rival to start and give up).
MANY = 600


def _many_files(sandbox, count: int = MANY) -> set[str]:
    for i in range(count):
        sandbox.file(f"d{i % 40:02d}/f{i:05d}.log", f"line {i}\n" * 8)
    return {f"logs/d{i % 40:02d}/f{i:05d}.log" for i in range(count)}


def test_eight_concurrent_chains_one_works_the_others_exit_75_and_change_nothing(sandbox, tmp_path):
    expired = _many_files(sandbox)
    before = sandbox.snapshot()
    start = threading.Barrier(8)
    results: list = [None] * 8

    def chain(i: int) -> None:
        start.wait()
        t0 = time.monotonic()
        results[i] = (sandbox.run("maintenance", timeout=60), time.monotonic() - t0)

    threads = [threading.Thread(target=chain, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    codes = sorted(r.returncode for r, _ in results)
    assert codes == [0] + [75] * 7, [(r.returncode, r.stderr) for r, _ in results]
    [(winner, winner_secs)] = [(r, s) for r, s in results if r.returncode == 0]
    for r, secs in results:
        if r.returncode == 75:
            assert "another run holds the lock" in r.stderr
            assert secs < winner_secs, "a rival waited for the lock instead of giving up at once"

    # The winner did the whole job; the rivals left no run, no archive, no log line.
    [run_id] = sandbox.runs()
    assert published_runs(sandbox.backups) == [run_id]
    assert assert_nothing_lost(sandbox, before, tmp_path / "restored") == expired
    assert {e["run"] for e in log_events(sandbox) if e["step"] != "scrub"} == {run_id}  # scrub: of every run
    assert [e["step"] for e in log_events(sandbox) if e["event"] == "start"] == [
        "maintenance",
        "scan",
        "backup",
        "verify",
        "clean",
    ]
    assert lock_is_free(sandbox.state)


def test_lock_dies_with_a_sigkilled_chain_and_the_next_run_resumes_its_work(sandbox, tmp_path):
    expired = _many_files(sandbox)
    before = sandbox.snapshot()
    holder = popen(sandbox, "maintenance")
    lock = sandbox.state / "lock"
    deadline = time.monotonic() + 30
    # Kill mid-chain: once the chain has written its name into the lock file and scan is
    # done, a step child (backup or later) is working under the chain's inherited lock.
    while True:
        assert holder.poll() is None, f"the chain ended before it could be killed: {holder.communicate()}"
        assert time.monotonic() < deadline, "backup never started"
        try:
            who = json.loads(lock.read_bytes() or b"{}")
        except (FileNotFoundError, ValueError):
            who = {}
        if who.get("step") == "maintenance" and sandbox.runs() and sandbox.run_dir().joinpath("scan.ok.json").exists():
            break
        time.sleep(0.005)
    assert not lock_is_free(sandbox.state), "the running chain does not hold the lock"
    kill_chain(holder)
    assert holder.returncode == -9
    [run_id] = sandbox.runs()
    assert not sandbox.run_dir(run_id).joinpath("clean.ok.json").exists(), "the chain finished before the kill"

    nxt = sandbox.run("maintenance", timeout=60)
    assert nxt.returncode == 0, f"the next run did not get the lock of the killed chain:\n{nxt.stderr}"
    assert sandbox.runs() == [run_id], "the killed run was not resumed"
    assert assert_nothing_lost(sandbox, before, tmp_path / "restored") == expired
    assert published_runs(sandbox.backups) == [run_id]
