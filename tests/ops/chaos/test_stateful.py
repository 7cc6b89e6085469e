"""A stateful property: whatever order the core's writes, the clock, the step scripts, a
SIGKILL at a crash point and a damaged state or destination file come in, after every one
of them every file ever written is present unchanged or byte-identical in an archive that
GNU tar and sha256sum accept and verify vouched for (oracle.judge: also nothing deleted
twice, the lock free).

Destination files are damaged only while their run is not yet verified: a copy damaged
after verify vouched for it is lost to the medium, not to the toolkit (clean does not
re-read archives; that is verify's job).

Small by default (make test); CHAOS=<n> multiplies the examples and lengthens them.
"""

import os
import random
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from tools.chaos import oracle
from tools.chaos.dataset import Dataset
from tools.chaos.outcome import Outcome
from tools.chaos.runner import fork_run
from tools.chaos.trials.corruption import corrupt, dest_files
from tools.sandbox import Sandbox

SCALE = int(os.environ.get("CHAOS") or 0)
SETTINGS = settings(
    max_examples=25 * SCALE if SCALE else 8,
    stateful_step_count=40 if SCALE else 16,
    deadline=None,
    derandomize=not SCALE,  # make test is reproducible; CHAOS explores
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
STEPS = ["scan", "backup", "verify", "clean"]
CRASH_POINTS = {
    "scan.before_manifest": "scan",
    "backup.after_member": "backup",
    "backup.after_archive": "backup",
    "backup.before_publish": "backup",
    "publish.before_rename": "backup",
    "backup.after_publish": "backup",
    "backup.before_manifest": "backup",
    "verify.before_manifest": "verify",
    "clean.after_unlink": "clean",
    "clean.before_manifest": "clean",
}


def chain_machine(base: Path, seen: dict):
    """The machine, writing its sandboxes under ``base`` and counting in ``seen`` what the
    examples exercised (so the test can tell a property that never met a deletion).

    What a rule draws never depends on the files on disk (hypothesis replays draws): a
    rule draws an index and takes it modulo whatever candidates exist at that moment.
    """

    class Chain(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            base.mkdir(exist_ok=True)
            self.n = len(os.listdir(base))
            self.sb = Sandbox(base / f"example-{self.n:03d}")
            self.ds = Dataset(self.sb)
            self.cache: dict = {}
            self.vouched: set = set()  # (destination, run) verify vouched for, before any damage
            self.written = 0
            self.scans = 0
            self.checks = 0

        def new_run_id(self) -> str:
            """Run ids in the order the scans happen (two in one second would sort at random)."""
            self.scans += 1
            return f"20260101T00{self.scans // 60:02d}{self.scans % 60:02d}Z-{self.scans:04x}"

        def next_step(self) -> tuple[str, tuple[str, ...]]:
            """What maintenance would run next: the newest run's first missing step."""
            runs = self.sb.runs()
            if runs:
                rdir = self.sb.state / "runs" / runs[-1]
                for step in STEPS:
                    if not (rdir / f"{step}.ok.json").exists():
                        return step, ("--run", runs[-1])
            return "scan", ("--run", self.new_run_id())

        def present(self) -> list[bytes]:
            ids = oracle.data_ids(self.sb)
            return sorted(k for k in self.ds.files if k in ids)

        @initialize(n=st.integers(1, 4))
        def core_has_old_files(self, n):
            for _ in range(n):
                self.core_writes_a_file(b"old fill %d\n" % self.written * 20, 120, b"2026/")

        @rule(
            content=st.binary(max_size=3000),
            age_days=st.sampled_from([0, 3, 45, 400]),
            sub=st.sampled_from([b"", b"2026/", b"2026/11/"]),
        )
        def core_writes_a_file(self, content, age_days, sub):
            self.written += 1
            self.ds.add("logs", sub + b"w%03d.log" % self.written, content, age_days, False)

        @rule(which=st.integers(0, 1 << 16), line=st.binary(min_size=1, max_size=64))
        def core_appends_to_a_file(self, which, line):
            present = self.present()
            if present:
                spec = self.ds.files[present[which % len(present)]]
                with open(self.sb.data / os.fsdecode(spec.key), "ab") as f:
                    f.write(line)
                spec.content += line

        @rule(which=st.integers(0, 1 << 16), days=st.sampled_from([1, 31, 365]))
        def time_passes_for_a_file(self, which, days):
            present = self.present()
            if present:
                path = self.sb.data / os.fsdecode(present[which % len(present)])
                st_ = os.stat(path)
                os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns - days * 86400 * 10**9))

        @rule(step=st.sampled_from(STEPS))
        def run_a_step(self, step):
            args = ("--run", self.new_run_id()) if step == "scan" else ()  # the others: newest run
            got = fork_run(self.sb, step, *args)
            assert got.code in (0, 1, 2), f"{step} exited {got.code}: {got.out[-600:]}"

        @rule()
        def maintenance_goes_on(self):
            step, args = self.next_step()
            got = fork_run(self.sb, step, *args)
            assert got.code in (0, 1, 2), f"{step} exited {got.code}: {got.out[-600:]}"

        @rule(which=st.integers(0, 1 << 16), nth=st.integers(1, 3))
        def maintenance_is_killed_at_a_crash_point(self, which, nth):
            step, args = self.next_step()
            points = sorted(p for p, s in CRASH_POINTS.items() if s == step)
            point = points[which % len(points)]
            got = fork_run(self.sb, step, *args, env={"QTS_OPS_CRASH_AT": f"{point}:{nth}"})
            seen["killed"] += got.code == -9
            assert got.code in (0, 1, 2, -9), f"{point}:{nth} exited {got.code}: {got.out[-600:]}"

        @rule(point=st.sampled_from(sorted(CRASH_POINTS)), nth=st.integers(1, 3))
        def kill_a_step_at_a_crash_point(self, point, nth):
            step = CRASH_POINTS[point]
            args = ("--run", self.new_run_id()) if step == "scan" else ()
            got = fork_run(self.sb, step, *args, env={"QTS_OPS_CRASH_AT": f"{point}:{nth}"})
            seen["killed"] += got.code == -9
            assert got.code in (0, 1, 2, -9), f"{point}:{nth} exited {got.code}: {got.out[-600:]}"

        @rule(which=st.integers(0, 1 << 16), seed=st.integers(0, 2**32))
        def corrupt_a_state_or_destination_file(self, which, seed):
            targets = []
            for run_id in self.sb.runs():
                rdir = self.sb.state / "runs" / run_id
                targets += [rdir / n for n in sorted(os.listdir(rdir)) if not n.endswith(".failed.json")]
                if not (rdir / "verify.ok.json").exists():
                    targets += dest_files(self.sb, run_id)
            if targets:
                self.vouched |= oracle.vouched_runs(self.sb)
                path = targets[which % len(targets)]
                seen["corrupted"] += corrupt(random.Random(seed), path, None) is not None

        @invariant()
        def every_file_is_present_or_in_a_verified_archive(self):
            self.checks += 1
            out = Outcome("stateful", self.n, 0)
            oracle.judge(
                self.sb,
                self.ds,
                self.sb.base.parent / f"scratch-{self.n}-{self.checks}",
                out,
                cache=self.cache,
                vouched=self.vouched,
            )
            seen["checks"] += 1
            seen["checks_with_files_deleted"] += len(self.present()) < len(self.ds.files)
            assert not out.lost, f"lost: {out.lost}; violations: {out.violations}"
            assert not out.violations, out.violations

    return Chain


def test_every_file_ever_written_survives_any_interleaving_of_steps_crashes_and_corruption(tmp_path):
    seen = dict.fromkeys(["checks", "checks_with_files_deleted", "killed", "corrupted"], 0)
    run_state_machine_as_test(chain_machine(tmp_path / "examples", seen), settings=SETTINGS)
    # Hypothesis switches rules off at random per example (swarm testing): the small
    # default run must still have met deletions, and crashes or corruption.
    assert seen["checks_with_files_deleted"] and seen["killed"] + seen["corrupted"], (
        f"the examples never met a deletion, or neither a crash nor a corruption: {seen}"
    )
