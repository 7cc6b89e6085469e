"""scripts/verify.py alone: refusal, idempotence, and every kind of damaged copy caught."""

import os
import subprocess

from ._support import RUN_B, chain_to, check_refusals_then_idempotence, files_of, restore_files, run_ok, tree, tree_diff


def test_verify_refuses_a_missing_or_tampered_chain_and_reruns_as_a_no_op(sandbox, subtests):
    check_refusals_then_idempotence(sandbox, subtests, "verify")


def _flip_archive_byte(published):
    archive = published / "logs.tar.zst"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))


def _truncate_archive(published):
    archive = published / "logs.tar.zst"
    archive.write_bytes(archive.read_bytes()[:-9])


def _edit_sha256_file(published):
    sums = published / "logs.sha256"
    text = sums.read_bytes()
    sums.write_bytes(bytes([text[0] ^ 0x01]) + text[1:])  # first hex digit of the first line, one bit


def _drop_member(published, tmp):
    """Rebuild the archive with GNU tar from a real extraction, leaving one member out."""
    work = tmp / "member-missing"
    work.mkdir()
    subprocess.run(["tar", "-xf", str(published / "logs.tar.zst"), "-C", str(work)], check=True)
    members = sorted(p.name for p in work.iterdir())
    subprocess.run(
        ["tar", "--zstd", "--format=gnu", "-cf", str(published / "logs.tar.zst"), "-C", str(work), *members[:-1]],
        check=True,
    )


def _archive_as_symlink(published, tmp):
    """The very bytes verified, but in a file elsewhere that a link points at: not a copy
    this destination holds (it may sit on the disk being cleaned)."""
    elsewhere = tmp / "elsewhere.tar.zst"
    os.rename(published / "logs.tar.zst", elsewhere)
    os.symlink(elsewhere, published / "logs.tar.zst")


def _run_dir_as_symlink(published, tmp):
    os.rename(published, tmp / "elsewhere")
    os.symlink(tmp / "elsewhere", published)


def test_verify_fails_on_a_damaged_copy_and_nothing_is_deleted_afterwards(sandbox, subtests, tmp_path):
    for name in ("a.log", "b.log", "c.log"):
        sandbox.file(name, f"content of {name}\n" * 50)
    chain_to(sandbox, "backup", RUN_B)
    published = sandbox.backups / RUN_B
    run_dir = sandbox.run_dir(RUN_B)
    saved_dest, saved_state = files_of(published), files_of(run_dir)
    data = sandbox.snapshot()
    damages = [  # (what, how, what verify's error says)
        ("one archive byte flipped", _flip_archive_byte, ""),
        ("archive truncated", _truncate_archive, ""),
        ("the .sha256 file edited", _edit_sha256_file, ""),
        ("a member missing from the archive", lambda p: _drop_member(p, tmp_path), ""),
        ("SHA256SUMS edited", lambda p: (p / "SHA256SUMS").write_bytes((p / "SHA256SUMS").read_bytes() + b" "), ""),
        (
            "the archive swapped for a symlink to the same bytes",
            lambda p: _archive_as_symlink(p, tmp_path),
            f"{RUN_B}/logs.tar.zst is a symbolic link",
        ),
        (
            "the run's directory swapped for a symlink to the same files",
            lambda p: _run_dir_as_symlink(p, tmp_path),
            f"{RUN_B} is not a directory (a symbolic link is never followed)",
        ),
    ]
    for label, damage, says in damages:
        with subtests.test(msg=label):
            try:
                damage(published)
                result = sandbox.run("verify", "--run", RUN_B)
                assert result.returncode == 1, f"verify exited {result.returncode}: {result.stderr}"
                assert "Nothing unverified was deleted." in result.stderr
                assert says in result.stderr
                assert (run_dir / "verify.failed.json").exists()
                assert not (run_dir / "verify.ok.json").exists()
                before = tree(sandbox.base)
                cleaned = sandbox.run("clean", "--run", RUN_B)
                assert cleaned.returncode == 2, f"clean exited {cleaned.returncode}: {cleaned.stderr}"
                assert tree_diff(before, tree(sandbox.base)) == []
                assert sandbox.snapshot() == data
            finally:
                if published.is_symlink():
                    os.unlink(published)
                    os.rename(tmp_path / "elsewhere", published)
                restore_files(published, saved_dest)
                restore_files(run_dir, saved_state)
    # The undamaged copy verifies: each failure above was the damage, nothing else.
    run_ok(sandbox, "verify", "--run", RUN_B)
    assert not (run_dir / "verify.failed.json").exists()
    assert os.listdir(sandbox.backups) == [RUN_B]
