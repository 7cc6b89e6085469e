"""File names as Linux allows them survive scan, backup, verify and clean, and restore with
GNU tar and check with sha256sum: bytes in, the same bytes out."""

import json
import os
import time

from ._support import decisions, extract, run_ok, sha256sum_check

ODD = [
    b"with space.log",
    "\u00fcn\u00efc\u00f8d\u00e9-\u65e5\u672c\u8a9e.log".encode(),
    b"new\nline.log",
    b"-leading-dash.log",
    b"--help.log",
    b"not-utf8-\xe9\xff\xfe.log",
    b"back\\slash.log",
    b"carriage\rreturn.log",
    b"tab\tand \"quote\" and 'single'.log",
    b"dir with space/\xff\xfe sub/deep.log",
    "\u00e9".encode() * 70 + b".log",  # 144 bytes: a GNU long-name record in the archive
]


def _make(root: bytes, name: bytes, content: bytes) -> None:
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    old = time.time() - 60 * 86400
    os.utime(path, (old, old))


def test_odd_file_names_survive_the_whole_chain_and_restore_with_gnu_tar(sandbox, tmp_path):
    root = os.fsencode(sandbox.data / "logs")
    contents = {name: b"content of " + name + b"\n" for name in ODD}
    for name, content in contents.items():
        _make(root, name, content)

    run_ok(sandbox, "maintenance")
    (run_id,) = sandbox.runs()
    assert sandbox.snapshot() == {}, "every odd name was matched, archived, verified and deleted"
    published = sandbox.backups / run_id

    out = tmp_path / "restored"
    extract(published / "logs.tar.zst", out)
    restored = sorted(
        os.path.relpath(os.path.join(d, f), os.fsencode(out))
        for d, _dirs, files in os.walk(os.fsencode(out))
        for f in files
    )
    assert restored == sorted(ODD), "exactly these members, under exactly these names"
    for name, content in contents.items():
        with open(os.path.join(os.fsencode(out), name), "rb") as f:
            assert f.read() == content, name
    check = sha256sum_check(published / "logs.sha256", out)
    assert check.returncode == 0, check.stdout + check.stderr
    check = sha256sum_check(published / "SHA256SUMS", published)
    assert check.returncode == 0, check.stdout + check.stderr

    logged = decisions(sandbox, run_id)
    assert sorted(os.fsencode(d["path"]) for d in logged) == sorted(ODD)
    assert all(d["event"] == "deleted" for d in logged)
    entries = (sandbox.run_dir(run_id) / "scan.logs.jsonl").read_bytes()
    entries.decode("utf-8")  # the state stays readable, greppable UTF-8 text whatever the names
    assert sorted(os.fsencode(json.loads(line)["path"]) for line in entries.splitlines()) == sorted(ODD)
