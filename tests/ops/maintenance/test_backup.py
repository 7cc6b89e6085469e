"""scripts/backup.py alone: refusal, idempotence, and an archive that standard tools read."""

import os
import subprocess

import pytest
import zstandard

from ._support import RUN_A, archive_members, check_refusals_then_idempotence, extract, run_ok, sha256sum_check


def test_backup_refuses_a_missing_or_tampered_scan_and_reruns_as_a_no_op(sandbox, subtests):
    check_refusals_then_idempotence(sandbox, subtests, "backup")


def test_backup_of_a_run_that_was_never_scanned_is_refused(sandbox):
    sandbox.file("a.log")
    result = sandbox.run("backup", "--run", RUN_A)
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr
    assert not (sandbox.state / "runs").exists()
    assert not sandbox.backups.exists()
    assert sandbox.snapshot() == {"logs/a.log": b"x"}


FILES = {
    "a.log": b"alpha\n",
    "deep/er/b.log": b"bravo" * 1000,
    "empty.log": b"",
    "x" * 120 + ".log": b"a name longer than a tar header holds\n",
}


@pytest.mark.parametrize("compression, ext", [("zstd", ".tar.zst"), ("gzip", ".tar.gz"), ("none", ".tar")])
def test_backup_archive_extracts_with_gnu_tar_and_checks_with_sha256sum(sandbox, tmp_path, compression, ext):
    sandbox.config["backup"]["compression"] = compression
    sandbox.write_config()
    for rel, content in FILES.items():
        sandbox.file(rel, content)
    run_ok(sandbox, "scan", "--run", RUN_A)
    run_ok(sandbox, "backup", "--run", RUN_A)

    published = sandbox.backups / RUN_A
    assert sorted(os.listdir(published)) == sorted(["logs" + ext, "logs.sha256", "SHA256SUMS", "MANIFEST.json"])
    assert sorted(archive_members(published / f"logs{ext}")) == sorted(r.encode() for r in FILES)
    check = sha256sum_check(published / "SHA256SUMS", published)
    assert check.returncode == 0, check.stdout + check.stderr
    if compression == "zstd":  # level 3 with a 1 MiB window: less CPU, and less memory to restore
        assert zstandard.get_frame_parameters((published / "logs.tar.zst").read_bytes()).window_size == 1 << 20

    out = tmp_path / "restored"
    extract(published / f"logs{ext}", out)
    for rel, content in FILES.items():
        assert (out / rel).read_bytes() == content
    check = sha256sum_check(published / "logs.sha256", out)
    assert check.returncode == 0, check.stdout + check.stderr
    # The check file is a real oracle: one changed byte in a restored file is caught.
    (out / "a.log").write_bytes(b"alphA\n")
    assert sha256sum_check(published / "logs.sha256", out).returncode == 1
    # Backup never deletes: every original is still there.
    assert sandbox.snapshot() == {f"logs/{rel}": c for rel, c in FILES.items()}


def test_policy_compression_none_writes_a_plain_tar_that_verifies_and_restores(sandbox, tmp_path):
    sandbox.config["backup"]["compression"] = "zstd"
    sandbox.config["policies"][0]["compression"] = "none"
    sandbox.write_config()
    sandbox.file("a.log", b"already compressed, say parquet")
    assert sandbox.run("maintenance").returncode == 0
    run_id = sandbox.runs()[-1]
    assert sorted(p.name for p in (sandbox.backups / run_id).iterdir()) == [
        "MANIFEST.json",
        "SHA256SUMS",
        "logs.sha256",
        "logs.tar",
    ]
    out = tmp_path / "restored"
    assert sandbox.run("restore", "--run", run_id, "--to", str(out)).returncode == 0
    assert (out / "logs" / "a.log").read_bytes() == b"already compressed, say parquet"


def test_owner_ids_beyond_seven_octal_digits_reach_gnu_tar_whole(sandbox, tmp_path):
    # A directory service (SSSD with AD) hands out uids far above 2,097,151, the most a tar
    # header's octal field holds; GNU tar then writes base-256, and so must we.
    sandbox.file("a.log", b"owned by a directory user\n")
    os.chown(sandbox.data / "logs" / "a.log", 3_000_000_001, 2_097_152)
    run_ok(sandbox, "scan", "--run", RUN_A)
    run_ok(sandbox, "backup", "--run", RUN_A)
    archive = sandbox.backups / RUN_A / "logs.tar.zst"
    listing = subprocess.run(
        ["tar", "--numeric-owner", "-tvf", str(archive)], capture_output=True, text=True, check=True
    )
    assert " 3000000001/2097152 " in listing.stdout, listing.stdout
    out = tmp_path / "restored"
    out.mkdir()
    subprocess.run(["tar", "--numeric-owner", "--same-owner", "-xf", str(archive), "-C", str(out)], check=True)
    st = os.stat(out / "a.log")
    assert (st.st_uid, st.st_gid) == (3_000_000_001, 2_097_152)
