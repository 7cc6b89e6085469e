"""Run ids sort by time, and "the newest run" is the last one sorted: a new id must sort
after every run already there, even one started in the same second (a quick maintenance
does that) or stamped later by a clock that has since been set back."""

import calendar

from hypothesis import given
from hypothesis import strategies as st

from ops.state.manifest import RUN_ID_RE, list_runs, new_run_id

NOW = calendar.timegm((2026, 11, 26, 3, 17, 0))


def _make(state_dir, *run_ids):
    for run_id in run_ids:
        (state_dir / "runs" / run_id).mkdir(parents=True)


def test_first_run_is_stamped_now(tmp_path):
    run_id = new_run_id(tmp_path, NOW)
    assert RUN_ID_RE.match(run_id) and run_id.startswith("20261126T031700Z-")


@given(st.integers(0, 0xFFFE))
def test_a_run_in_the_same_second_sorts_after_the_one_before(tmp_path_factory, suffix):
    state_dir = tmp_path_factory.mktemp("state")
    _make(state_dir, f"20261126T031700Z-{suffix:04x}")
    run_id = new_run_id(state_dir, NOW)
    assert RUN_ID_RE.match(run_id)
    assert run_id.startswith("20261126T031700Z-") and run_id > f"20261126T031700Z-{suffix:04x}"


def test_after_the_last_suffix_of_a_second_the_stamp_moves_on(tmp_path):
    _make(tmp_path, "20261126T031700Z-ffff")
    assert new_run_id(tmp_path, NOW).startswith("20261126T031701Z-")


def test_a_clock_set_back_still_gives_the_newest_id(tmp_path):
    _make(tmp_path, "20261126T031700Z-0001", "20261126T091500Z-7f00")
    run_id = new_run_id(tmp_path, NOW)
    assert run_id > "20261126T091500Z-7f00" and run_id.startswith("20261126T091500Z-")


def test_many_runs_in_one_second_keep_their_order(tmp_path):
    made = []
    for _ in range(50):
        made.append(new_run_id(tmp_path, NOW))
        _make(tmp_path, made[-1])
    assert list_runs(tmp_path) == made


def test_a_later_second_starts_afresh(tmp_path):
    _make(tmp_path, "20261126T031700Z-fff0")
    assert new_run_id(tmp_path, NOW + 1).startswith("20261126T031701Z-")
