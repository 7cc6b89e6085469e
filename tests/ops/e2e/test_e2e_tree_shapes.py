"""Awkward trees survive the whole chain: very deep directories, names longer than a tar
header holds, and one inode under two names."""

import os

from e2e_support import assert_nothing_lost, events_for, extract

from tools.sandbox import published_runs, tar_members

DEPTH = 300
LONG_NAME = ("ticks-" + "x" * 190 + ".log").encode()
assert len(LONG_NAME) == 200


def test_tree_300_deep_and_200_byte_name_survive_the_chain_and_restore_with_gnu_tar(sandbox, tmp_path):
    # 11 bytes a level: the deepest path is ~3.5 KB, past every tar header field yet under PATH_MAX.
    deep = "/".join(f"level-{i:04d}" for i in range(DEPTH))
    paths = [
        f"{deep}/bottom.log",
        f"{deep}/{LONG_NAME.decode()}",
        "/".join(deep.split("/")[:150]) + "/middle.log",
        LONG_NAME.decode(),
    ]
    for i, rel in enumerate(paths):
        sandbox.file(rel, f"content {i}\n" * (i + 3))
    before = sandbox.snapshot()
    assert len(before) == len(paths)

    done = sandbox.run("maintenance")
    assert done.returncode == 0, done.stderr

    [run_id] = published_runs(sandbox.backups)
    archive = sandbox.backups / run_id / "logs.tar.zst"
    assert sorted(tar_members(archive)) == sorted(paths)
    restored = extract(archive, tmp_path / "gnu-tar")  # also runs sha256sum -c on the .sha256 file
    for rel in paths:
        assert (restored / rel).read_bytes() == before[f"logs/{rel}"]
    assert sandbox.snapshot() == {}, "an expired file of the deep tree was not cleaned"


def test_hardlinked_names_that_both_expire_are_both_archived_and_nothing_is_lost(sandbox, tmp_path):
    first = sandbox.file("fills/2026-09-01.log", "fill A 100\n" * 30)
    second = sandbox.data / "logs" / "archive-view" / "2026-09-01.log"
    second.parent.mkdir()
    os.link(first, second)
    sandbox.file("fills/2026-09-02.log", "fill B 101\n" * 30)
    content = first.read_bytes()
    before = sandbox.snapshot()

    done = sandbox.run("maintenance")
    assert done.returncode == 0, done.stderr

    [run_id] = published_runs(sandbox.backups)
    archive = sandbox.backups / run_id / "logs.tar.zst"
    members = tar_members(archive)
    assert "fills/2026-09-01.log" in members and "archive-view/2026-09-01.log" in members
    restored = extract(archive, tmp_path / "gnu-tar")
    assert (restored / "fills/2026-09-01.log").read_bytes() == content
    assert (restored / "archive-view/2026-09-01.log").read_bytes() == content
    # Unlinking one name changes the inode's ctime: the other name may be kept for a later
    # run, but whatever is gone from the data must come back from the archive.
    gone = assert_nothing_lost(sandbox, before, tmp_path / "oracle")
    assert "logs/fills/2026-09-02.log" in gone
    assert gone & {"logs/fills/2026-09-01.log", "logs/archive-view/2026-09-01.log"}, "neither name was cleaned"
    for rel in ("fills/2026-09-01.log", "archive-view/2026-09-01.log"):
        assert len(events_for(sandbox, rel, "deleted")) <= 1
