"""Properties of ops.maintenance.retention.policy.decide over random file sets and policies (hypothesis).

Ages cluster around the policy boundaries (0, settle, older_than, the future tolerance),
where off-by-one mistakes live. No example database is written (database=None); the
hypothesis pytest plugin still keeps its git-ignored constants cache in ./.hypothesis at
collection time, like pytest's own .pytest_cache.
"""

import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.config import Duration, Policy
from ops.maintenance.retention.policy import FUTURE_TOLERANCE_NS, FileInfo, decide

NOW = 1_790_000_000 * 10**9
S = 10**9
SETTINGS = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

durations_s = st.sampled_from([0, 1, 59, 60, 600, 3600, 86400, 30 * 86400, 90 * 86400])


@st.composite
def policies(draw):
    return Policy(
        name="p",
        root=Path("/nonexistent/root"),
        include=("**",),
        exclude=(),
        older_than=Duration("t", draw(durations_s)),
        settle=Duration("t", draw(durations_s)),
        keep_last=draw(st.integers(0, 6)),
        missing_ok=False,
    )


@st.composite
def ages_for(draw, pol: Policy):
    """An age in ns, often exactly at or 1ns beside a boundary of ``pol``."""
    anchors = [0, pol.settle.ns, pol.older_than.ns, -FUTURE_TOLERANCE_NS, 400 * 86400 * S, -400 * 86400 * S]
    return draw(
        st.one_of(
            st.builds(lambda a, d: a + d, st.sampled_from(anchors), st.sampled_from([-1, 0, 1])),
            st.integers(-500 * 86400 * S, 500 * 86400 * S),
        )
    )


@st.composite
def scenarios(draw):
    pol = draw(policies())
    ages = draw(st.lists(ages_for(pol), max_size=20))
    # paths are unique within a root; some with a newline or an undecodable byte
    names = [draw(st.sampled_from(["a", "b/c", "x\ny", "caf\udce9", "z"])) + f"/{i}.log" for i in range(len(ages))]
    files = [
        FileInfo(path=n, size=1, mtime_ns=NOW - a, ctime_ns=NOW, dev=7, ino=i)
        for i, (n, a) in enumerate(zip(names, ages, strict=True))
    ]
    # some files share an mtime so keep_last must break ties by path
    if len(files) > 2 and draw(st.booleans()):
        files[1] = FileInfo(files[1].path, 1, files[0].mtime_ns, NOW, 7, 1)
    return pol, files


def run(files, pol):
    return list(decide(iter(files), pol, NOW))


@SETTINGS
@given(scenarios())
def test_decisions_partition_the_input(sc):
    pol, files = sc
    out = run(files, pol)
    assert len(out) == len(files)
    assert sorted((d.file.path, d.file.ino) for d in out) == sorted((f.path, f.ino) for f in files)
    for d in out:
        assert d.reason and d.rule
        assert d.expire == (d.rule == "older_than")


@SETTINGS
@given(scenarios())
def test_a_file_expires_only_when_older_than_both_older_than_and_settle(sc):
    pol, files = sc
    for d in run(files, pol):
        if d.expire:
            age = NOW - d.file.mtime_ns
            assert age >= pol.older_than.ns
            assert age >= pol.settle.ns
            assert age >= 0


@SETTINGS
@given(scenarios())
def test_a_file_past_both_limits_and_not_among_the_newest_expires(sc):
    pol, files = sc
    newest = set(sorted(((f.mtime_ns, f.path) for f in files), reverse=True)[: pol.keep_last])
    for d in run(files, pol):
        age = NOW - d.file.mtime_ns
        if age >= pol.older_than.ns and age >= pol.settle.ns and (d.file.mtime_ns, d.file.path) not in newest:
            assert d.expire, d


@SETTINGS
@given(scenarios())
def test_the_newest_keep_last_files_are_never_expired(sc):
    pol, files = sc
    newest = {p for _, p in sorted(((f.mtime_ns, f.path) for f in files), reverse=True)[: pol.keep_last]}
    for d in run(files, pol):
        if d.file.path in newest:
            assert not d.expire, d


@SETTINGS
@given(scenarios(), durations_s)
def test_raising_older_than_never_expires_more(sc, extra_s):
    pol, files = sc
    stricter = Policy(
        pol.name,
        pol.root,
        pol.include,
        pol.exclude,
        Duration("t", pol.older_than.seconds + extra_s),
        pol.settle,
        pol.keep_last,
        pol.missing_ok,
    )
    loose = {d.file.path for d in run(files, pol) if d.expire}
    strict = {d.file.path for d in run(files, stricter) if d.expire}
    assert strict <= loose


@SETTINGS
@given(scenarios(), st.integers(0, 3))
def test_raising_keep_last_never_expires_more(sc, extra):
    pol, files = sc
    more = Policy(
        pol.name, pol.root, pol.include, pol.exclude, pol.older_than, pol.settle, pol.keep_last + extra, pol.missing_ok
    )
    assert {d.file.path for d in run(files, more) if d.expire} <= {d.file.path for d in run(files, pol) if d.expire}


@SETTINGS
@given(scenarios(), st.randoms(use_true_random=False))
def test_decisions_do_not_depend_on_input_order(sc, rnd: random.Random):
    pol, files = sc
    shuffled = list(files)
    rnd.shuffle(shuffled)

    def key(ds):
        return sorted((d.file.path, d.expire, d.rule, d.reason) for d in ds)

    assert key(run(files, pol)) == key(run(shuffled, pol))
