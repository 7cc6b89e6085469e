"""A small seeded slice of the fault campaign, inside make test (make chaos runs the whole
campaign: scripts/chaos.py). Every fault kind but the 2,000-deep tree runs one trial with
a fifth of the cheap faults; hostile-deep costs ~10 s of clean alone (its O(depth^2)
empty-directory pass), so the slice leaves it to make chaos and test_chaos_regressions.py
covers the deep walk. The oracle is shown to catch a loss first, so a green slice means
something."""

import os

from tools.chaos import campaign
from tools.chaos.dataset import Dataset
from tools.chaos.oracle import judge
from tools.chaos.outcome import Outcome
from tools.chaos.report import failures, table
from tools.chaos.runner import real_run
from tools.chaos.trials import KINDS

SEED = 20261126
SLICE = [k for k in KINDS if k != "hostile-deep"]
# Kinds that may be skipped, with the reason in the table: a tmpfs or a private bind
# mount needs CAP_SYS_ADMIN.
MAY_SKIP = {"disk-full-dest", "disk-full-state", "hostile-uid"}


def test_oracle_reports_a_file_deleted_without_an_archive_and_a_damaged_archive(sandbox, tmp_path):
    ds = Dataset(sandbox)
    archived = ds.add("logs", b"2026/ticks-old.log", b"tick 1\n" * 50, 90, True)
    young = ds.add("logs", b"2026/ticks-new.log", b"tick 2\n" * 50, 1, False)
    assert real_run(sandbox).code == 0
    clean = Outcome("self-test", 0, 0)
    judge(sandbox, ds, tmp_path / "a", clean)
    assert not clean.failed, clean

    os.unlink(sandbox.data / "logs" / "2026/ticks-new.log")  # gone, and never archived
    lost = Outcome("self-test", 1, 0)
    judge(sandbox, ds, tmp_path / "b", lost)
    assert lost.lost == [young.key]

    [run_id] = sandbox.runs()
    archive = sandbox.backups / run_id / "logs.tar.zst"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x10
    archive.write_bytes(bytes(data))
    damaged = Outcome("self-test", 2, 0)
    judge(sandbox, ds, tmp_path / "c", damaged)
    assert sorted(damaged.lost) == sorted([young.key, archived.key])
    assert any("SHA256SUMS" in v for v in damaged.violations), damaged.violations


def test_seeded_slice_of_every_fault_kind_preserves_every_file(tmp_path):
    results = campaign.run_campaign(SEED, trials=1, work=tmp_path / "chaos", kinds=SLICE, workers=2, budget=0.2)
    text, passed = table(results)
    report = f"\n{text}\n{failures(results, SEED)}"
    assert passed, report
    assert sorted({o.kind for o in results}) == sorted(SLICE), report
    for o in results:
        if o.skipped:
            assert o.kind in MAY_SKIP and o.skipped, f"{o.kind} skipped: {o.skipped!r}"
            continue
        assert o.recovered, f"{o.kind} did not recover{report}"
    injected = {o.kind: o.faults for o in results if not o.skipped}
    assert all(n > 0 for n in injected.values()), f"a kind injected no fault: {injected}{report}"
    assert sum(injected.values()) >= 80, injected
