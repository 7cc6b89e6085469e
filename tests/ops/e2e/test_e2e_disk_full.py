"""A destination that fills up: backup fails (exit 1), nothing is deleted, nothing half
written is visible, and once there is room a rerun completes the run."""

import json
import os

import pytest
from e2e_support import assert_nothing_lost, remount, tmpfs

from tools.sandbox import lock_is_free, published_runs


@pytest.fixture
def small_destination(sandbox, tmp_path):
    """A 256 KiB tmpfs as the sandbox's only backup destination."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    with tmpfs(mnt, "256k"):
        sandbox.config["backup"]["destinations"] = [{"name": "small", "type": "local", "path": "small"}]
        sandbox.write_config()
        yield mnt


# Incompressible data, more than fits: while_archiving overflows in the middle of the
# archive (more than the 1 MiB write buffer); at_archive_close fits the buffer, so the
# first real write, the flush that ends the archive, is the one that fails.
@pytest.mark.parametrize("files,size", [(8, 256 * 1024), (3, 140 * 1024)], ids=["while_archiving", "at_archive_close"])
def test_backup_to_a_full_destination_fails_deletes_nothing_and_a_rerun_with_room_completes(
    sandbox, tmp_path, small_destination, files, size
):
    for i in range(files):
        sandbox.file(f"day{i}/ticks.log", os.urandom(size))
    before = sandbox.snapshot()

    full = sandbox.run("maintenance")
    assert full.returncode == 1, full.stderr
    assert "No space left on device" in full.stderr
    [run_id] = sandbox.runs()
    run = sandbox.run_dir(run_id)
    assert not run.joinpath("backup.ok.json").exists()
    assert "No space left on device" in json.loads(run.joinpath("backup.failed.json").read_text())["error"]
    assert sandbox.snapshot() == before, "a file was deleted although backup failed"
    assert os.listdir(small_destination) == [], "a half-written run (or its staging) was left on the destination"
    assert lock_is_free(sandbox.state)

    remounted = remount(small_destination, "16m")
    assert remounted.returncode == 0, remounted.stderr
    again = sandbox.run("maintenance")
    assert again.returncode == 0, again.stderr
    assert sandbox.runs() == [run_id]
    assert published_runs(small_destination) == [run_id]
    gone = assert_nothing_lost(sandbox, before, tmp_path / "restored", backups=small_destination)
    assert gone == set(before)
