"""restore: back from a destination, byte-identical, never overwriting, never trusting the archive.

Everything runs through scripts/restore.py as a subprocess against real archives written by
a real maintenance run; hostile archives are built by hand with tarfile and published on the
destination with every checksum forged to match, so only restore's member checks stand
between them and the disk.
"""

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from tools.sandbox import Sandbox

from ._support import path_tree

LONG_NAME = "l" * 70 + "/" + "n" * 70 + ".log"  # > 100 bytes: a GNU long-name record in the tar
OTHER_ROOT = "--from-other-host"  # the template's run into this sandbox's roots (see after_maintenance)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _two_policies(sandbox) -> None:
    config = dict(sandbox.config)
    config["policies"] = config["policies"] + [
        {
            "name": "dumps",
            "root": "data/dumps",
            "include": ["**/*"],
            "older_than": "30d",
            "settle": "10m",
            "keep_last": 0,
            "missing_ok": False,
        }
    ]
    (sandbox.data / "dumps").mkdir()
    sandbox.write_config(config)


def _maintained(sandbox) -> tuple[str, dict[tuple[str, str], tuple[bytes, int]]]:
    """A completed maintenance run over two policies; its id and {(policy, relpath): (content, mtime_s)} it deleted."""
    _two_policies(sandbox)
    files = {
        ("logs", "two.log"): b"two\n",
        ("logs", "a/one.log"): b"hello one\n" * 100,
        ("logs", "deep/er/with space.log"): bytes(range(256)) * 40,
        ("logs", "empty.log"): b"",
        ("logs", LONG_NAME): b"long name member",
        ("dumps", "db/orders-2026.sql"): b"INSERT INTO orders VALUES (1);\n" * 50,
        ("dumps", "fills.bin"): os.urandom(3000),
    }
    originals = {}
    for i, ((policy, rel), content) in enumerate(files.items()):
        path = sandbox.file(rel, content, age_days=40 + i, root=policy)
        originals[(policy, rel)] = (content, int(path.stat().st_mtime))
    sandbox.file("young.log", b"still needed", age_days=1)  # kept: must never be touched by restore
    r = sandbox.run("maintenance")
    assert r.returncode == 0, r.stderr
    for policy, rel in originals:  # precondition: clean really deleted them
        assert not (sandbox.data / policy / rel).exists(), rel
    return sandbox.runs()[-1], originals


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One real maintenance for the module; tests get a copy of its data and destination."""
    sandbox = Sandbox(tmp_path_factory.mktemp("template"))
    run_id, originals = _maintained(sandbox)
    return sandbox, run_id, originals


@pytest.fixture
def after_maintenance(sandbox, template):
    """This test's sandbox as the template left it after maintenance: same config, data, destination.

    Local state is not copied: restore reads only the destination. The run was backed up
    from the template's roots, not this sandbox's, so a restore into the roots here says
    OTHER_ROOT, as an operator would after a look.
    """
    source, run_id, originals = template
    sandbox.write_config(source.config)
    shutil.copytree(source.data, sandbox.data, symlinks=True, dirs_exist_ok=True)
    shutil.copytree(source.backups, sandbox.backups, symlinks=True)
    sandbox.logs.mkdir(mode=0o700)  # as maintenance left it: the log dir exists
    return run_id, originals


def _assert_restored(base: Path, originals: dict, policies: set[str]) -> None:
    for (policy, rel), (content, mtime_s) in originals.items():
        path = base / policy / rel
        if policy not in policies:
            assert not path.exists(), f"{path} restored although --policy excluded it"
            continue
        assert path.read_bytes() == content, rel
        st = path.lstat()
        assert stat.S_ISREG(st.st_mode)
        assert int(st.st_mtime) == mtime_s, rel


# -- the normal way back -------------------------------------------------------------------


def test_restore_puts_every_deleted_file_back_under_its_root_with_content_and_mtime(sandbox):
    run_id, originals = _maintained(sandbox)
    young_before = (sandbox.data / "logs" / "young.log").stat()

    r = sandbox.run("restore", "--run", run_id)

    assert r.returncode == 0, r.stderr
    _assert_restored(sandbox.data, originals, {"logs", "dumps"})
    young_after = (sandbox.data / "logs" / "young.log").stat()
    assert (young_after.st_ino, young_after.st_mtime_ns) == (young_before.st_ino, young_before.st_mtime_ns)
    # no temporary names left beside the restored files
    leftovers = [p for p in sandbox.data.rglob(".*")]
    assert leftovers == []


def test_restore_to_dir_writes_under_dir_slash_policy_and_leaves_roots_alone(sandbox, after_maintenance, tmp_path):
    run_id, originals = after_maintenance
    data_before = path_tree(sandbox.data)
    target = tmp_path / "elsewhere"

    r = sandbox.run("restore", "--run", run_id, "--to", str(target))

    assert r.returncode == 0, r.stderr
    _assert_restored(target, originals, {"logs", "dumps"})
    assert sorted(os.listdir(target)) == ["dumps", "logs"]
    assert path_tree(sandbox.data) == data_before


def test_restore_policy_option_restores_only_that_policy(sandbox, after_maintenance):
    run_id, originals = after_maintenance

    r = sandbox.run("restore", "--run", run_id, "--policy", "dumps", OTHER_ROOT)

    assert r.returncode == 0, r.stderr
    _assert_restored(sandbox.data, originals, {"dumps"})


def test_restore_unknown_policy_fails_and_writes_nothing(sandbox, after_maintenance):
    run_id, _ = after_maintenance
    before = path_tree(sandbox.base)

    r = sandbox.run("restore", "--run", run_id, "--policy", "nosuch")

    assert r.returncode == 1
    assert "nosuch" in r.stderr
    assert path_tree(sandbox.base) == before


def test_restore_works_without_any_local_state(sandbox):
    run_id, originals = _maintained(sandbox)
    shutil.rmtree(sandbox.state)

    r = sandbox.run("restore", "--run", run_id)

    assert r.returncode == 0, r.stderr
    _assert_restored(sandbox.data, originals, {"logs", "dumps"})


def test_restore_twice_changes_nothing_the_second_time(sandbox, after_maintenance):
    """Every file is already there with its recorded content: nothing to do, exit 0
    (idempotent), and nothing written or touched."""
    run_id, originals = after_maintenance
    assert sandbox.run("restore", "--run", run_id, OTHER_ROOT).returncode == 0
    before = path_tree(sandbox.base)

    r = sandbox.run("restore", "--run", run_id, OTHER_ROOT)

    assert r.returncode == 0, r.stderr
    assert path_tree(sandbox.base) == before


# -- never overwrite ------------------------------------------------------------------------


@pytest.mark.parametrize("conflict", [("logs", "deep/er/with space.log"), ("dumps", "fills.bin")])
def test_restore_with_an_existing_target_file_lists_the_conflict_and_writes_nothing(
    sandbox, after_maintenance, conflict
):
    run_id, originals = after_maintenance
    policy, rel = conflict
    existing = sandbox.file(rel, b"the operator's newer copy", age_days=0, root=policy)
    before = path_tree(sandbox.base)

    r = sandbox.run("restore", "--run", run_id, OTHER_ROOT)

    assert r.returncode == 1
    assert str(existing) in r.stderr
    assert existing.read_bytes() == b"the operator's newer copy"
    # nothing else came back either, from this policy or any other
    assert path_tree(sandbox.base) == before
    for (p, other), _ in originals.items():
        if (p, other) != conflict:
            assert not (sandbox.data / p / other).exists(), other


def test_restore_refuses_when_a_target_directory_is_a_symlink_and_writes_nothing_through_it(
    sandbox, after_maintenance, tmp_path
):
    run_id, _ = after_maintenance
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(sandbox.data / "logs" / "a")
    (sandbox.data / "logs" / "a").symlink_to(outside)

    r = sandbox.run("restore", "--run", run_id, "--policy", "logs", OTHER_ROOT)

    assert r.returncode == 1
    assert os.listdir(outside) == []


@pytest.mark.parametrize("to", [False, True], ids=["root", "TO"])
def test_restore_refuses_a_target_that_is_itself_a_symlink_as_scan_refuses_such_a_root(
    sandbox, after_maintenance, tmp_path, to
):
    run_id, _ = after_maintenance
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "to" / "logs" if to else sandbox.data / "logs"
    if to:
        target.parent.mkdir()
    else:
        shutil.rmtree(target)
    target.symlink_to(outside)

    where = ["--to", str(tmp_path / "to")] if to else [OTHER_ROOT]
    r = sandbox.run("restore", "--run", run_id, "--policy", "logs", *where)

    assert r.returncode == 1, r.stderr
    assert f"the restore target {target} is not a directory (a symbolic link is never followed)" in r.stderr
    assert os.listdir(outside) == []


# -- untrusted archives -----------------------------------------------------------------------

FORGED_RUN = "20200101T000000Z-0bad"


class _ExactInfo(tarfile.TarInfo):
    """A TarInfo whose name goes into the header exactly as given (tarfile appends '/' to directories)."""

    def get_info(self):
        info = super().get_info()
        info["name"] = self.name
        return info


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "") -> tuple:
    info = _ExactInfo(name)
    info.type = kind
    info.mode = 0o644
    info.mtime = 1_700_000_000
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def _forge_run(sandbox, src_run: str, members: list[tuple], policy: str = "logs") -> str:
    """Copy a real run to FORGED_RUN with ``members`` as the policy's archive; forge every checksum."""
    src = sandbox.backups / src_run
    dst = sandbox.backups / FORGED_RUN
    shutil.copytree(src, dst)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    archive = zstandard.ZstdCompressor().compress(buf.getvalue())
    sums = b"".join(f"{_sha(data)}  {info.name}\n".encode() for info, data in members)
    manifest = json.loads((dst / "MANIFEST.json").read_bytes())
    assert manifest["compression"] == "zstd"
    manifest["run_id"] = FORGED_RUN
    for other in [n for n in manifest["policies"] if n != policy]:  # the forged run holds this policy alone
        for key in ("archive", "sums"):
            (dst / manifest["policies"][other][key]).unlink()
        del manifest["policies"][other]
    manifest["policies"][policy].update(
        archive_bytes=len(archive),
        archive_sha256=_sha(archive),
        members=len(members),
        member_bytes=sum(len(d) for _, d in members),
        sums_sha256=_sha(sums),
    )
    manifest_raw = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (dst / f"{policy}.tar.zst").write_bytes(archive)
    (dst / f"{policy}.sha256").write_bytes(sums)
    (dst / "MANIFEST.json").write_bytes(manifest_raw)
    files = {"MANIFEST.json": manifest_raw}
    for name in sorted(os.listdir(dst)):
        if name not in files and name != "SHA256SUMS":
            files[name] = (dst / name).read_bytes()
    (dst / "SHA256SUMS").write_bytes(b"".join(f"{_sha(c)}  {n}\n".encode() for n, c in files.items()))
    # the forgery is consistent: standard tools would accept it
    listed = dict(reversed(line.split("  ")) for line in (dst / "SHA256SUMS").read_text().splitlines())
    for name, sha in listed.items():
        assert _sha((dst / name).read_bytes()) == sha
    return FORGED_RUN


def _hostile(case: str, tmp_path: Path) -> list[tuple]:
    fine = _member("fine.log", data=b"an innocent member first")
    return {
        "absolute": [fine, _member(str(tmp_path / "abs_escape" / "escape"), data=b"pwned")],
        "dotdot": [fine, _member("../escape", data=b"pwned")],
        "nested_dotdot": [fine, _member("a/../../escape", data=b"pwned")],
        "symlink": [
            fine,
            _member("evil", tarfile.SYMTYPE, linkname="../../outside"),
            _member("evil/escape", data=b"pwned through the link"),
        ],
        "symlink_file": [fine, _member("escape", tarfile.SYMTYPE, linkname="../../victim.txt")],
        "hardlink": [fine, _member("escape", tarfile.LNKTYPE, linkname="../../victim.txt")],
        "hardlink_absolute": [fine, _member("escape", tarfile.LNKTYPE, linkname=str(tmp_path / "victim.txt"))],
        "fifo": [fine, _member("escape", tarfile.FIFOTYPE)],
        "chardev": [fine, _member("escape", tarfile.CHRTYPE)],
        "blockdev": [fine, _member("escape", tarfile.BLKTYPE)],
        "directory": [fine, _member("escape", tarfile.DIRTYPE)],
    }[case]


HOSTILE = [
    "absolute",
    "dotdot",
    "nested_dotdot",
    "symlink",
    "symlink_file",
    "hardlink",
    "hardlink_absolute",
    "fifo",
    "chardev",
    "blockdev",
    "directory",
]


def _no_escape_anywhere(tmp_path: Path) -> None:
    for dirpath, dirs, files in os.walk(tmp_path):
        for name in dirs + files:
            p = Path(dirpath) / name
            assert name != "escape" or p.parent == tmp_path / "var" / "backups" / FORGED_RUN, f"{p} was created"
            assert not p.is_symlink(), f"symlink {p} was created"
            if name.startswith(".") and ".tmp-" in name:
                raise AssertionError(f"temporary file {p} left behind")


@pytest.mark.parametrize("case", HOSTILE)
def test_restore_refuses_hostile_member_even_with_forged_checksums(sandbox, after_maintenance, tmp_path, case):
    run_id, _ = after_maintenance
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"victim")
    (tmp_path / "outside").mkdir()
    forged = _forge_run(sandbox, run_id, _hostile(case, tmp_path))
    target_to = tmp_path / "restored"
    allowed_new = {
        "restored",
        "restored/logs",
        "restored/logs/fine.log",
        "data/logs/fine.log",
        # the state records a file restored into its root (restore_grace)
        "var",
        "var/state",
        "var/state/restored.jsonl",
    }
    before = path_tree(tmp_path)

    for args in (["--to", str(target_to)], [OTHER_ROOT]):  # under TO/<policy>/, then straight into the policy root
        r = sandbox.run("restore", "--run", forged, *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "refusing" in r.stderr, r.stderr

    after = path_tree(tmp_path)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    # only the target may change: its directory, and the innocent member, restored intact
    assert changed - allowed_new - {"data/logs"} == set(), changed
    for rel in ("restored/logs/fine.log", "data/logs/fine.log"):
        if (tmp_path / rel).exists():
            assert (tmp_path / rel).read_bytes() == b"an innocent member first"
    _no_escape_anywhere(tmp_path)
    assert not (tmp_path / "abs_escape").exists()
    assert os.listdir(tmp_path / "outside") == []
    assert victim.read_bytes() == b"victim" and victim.stat().st_nlink == 1


def test_forged_run_with_safe_members_is_restored(sandbox, after_maintenance, tmp_path):
    """The forging helper itself is sound: a forged run of regular members restores fine."""
    run_id, _ = after_maintenance
    forged = _forge_run(sandbox, run_id, [_member("fine.log", data=b"ok"), _member("sub/dir/b.log", data=b"b")])

    r = sandbox.run("restore", "--run", forged, "--to", str(tmp_path / "out"))

    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "logs" / "fine.log").read_bytes() == b"ok"
    assert (tmp_path / "out" / "logs" / "sub" / "dir" / "b.log").read_bytes() == b"b"
    assert int((tmp_path / "out" / "logs" / "fine.log").stat().st_mtime) == 1_700_000_000


def test_restore_refuses_archive_member_its_sha256_file_does_not_list(sandbox, after_maintenance, tmp_path):
    """Archive and .sha256 file disagree on a member's name (all checksums still match): refused."""
    run_id, _ = after_maintenance
    forged = _forge_run(sandbox, run_id, [_member("fine.log", data=b"ok")])
    dst = sandbox.backups / forged
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info, data = _member("other.log", data=b"ok")
        tf.addfile(info, io.BytesIO(data))
    archive = zstandard.ZstdCompressor().compress(buf.getvalue())
    (dst / "logs.tar.zst").write_bytes(archive)
    manifest = json.loads((dst / "MANIFEST.json").read_bytes())  # its digests too: only the member check is left
    manifest["policies"]["logs"]["archive_sha256"] = _sha(archive)
    (dst / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    sums = (dst / "SHA256SUMS").read_text().splitlines()
    new_sha = {"logs.tar.zst": _sha(archive), "MANIFEST.json": _sha((dst / "MANIFEST.json").read_bytes())}
    (dst / "SHA256SUMS").write_text(
        "".join(
            (f"{new_sha[line.split('  ')[1]]}  {line.split('  ')[1]}" if line.split("  ")[1] in new_sha else line)
            + "\n"
            for line in sums
        )
    )

    r = sandbox.run("restore", "--run", forged, "--to", str(tmp_path / "out"))

    assert r.returncode == 1
    assert "other.log" in r.stderr
    assert not (tmp_path / "out" / "logs" / "other.log").exists()
    assert not (tmp_path / "out" / "logs" / "fine.log").exists()


# -- damaged archives and manifests (checksums not forged) -----------------------------------------


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_restore_of_an_archive_with_a_flipped_byte_fails_and_restores_nothing_wrong(
    sandbox, after_maintenance, tmp_path, where
):
    run_id, originals = after_maintenance
    archive = sandbox.backups / run_id / "logs.tar.zst"
    size = archive.stat().st_size
    _flip(archive, {"first": 0, "middle": size // 2, "last": size - 1}[where])
    target = tmp_path / "out"

    r = sandbox.run("restore", "--run", run_id, "--to", str(target))

    assert r.returncode == 1, r.stderr
    for (policy, rel), (content, _) in originals.items():
        path = target / policy / rel
        if path.exists():
            assert path.read_bytes() == content, f"{rel} restored with wrong content"


def test_restore_never_links_a_member_whose_content_fails_its_sha256(sandbox, tmp_path):
    """Uncompressed, a flipped content byte reaches the member check itself."""
    config = dict(sandbox.config, backup=dict(sandbox.config["backup"], compression="none"))
    sandbox.write_config(config)
    marker = b"UNIQUE-MARKER-" * 20
    sandbox.file("victim.log", marker, age_days=40)
    r = sandbox.run("maintenance")
    assert r.returncode == 0, r.stderr
    run_id = sandbox.runs()[-1]
    archive = sandbox.backups / run_id / "logs.tar"
    _flip(archive, archive.read_bytes().index(marker) + 5)

    r = sandbox.run("restore", "--run", run_id)

    assert r.returncode == 1
    assert not (sandbox.data / "logs" / "victim.log").exists()
    assert [p for p in (sandbox.data / "logs").rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("edit", ["append_space", "change_root"])
def test_restore_refuses_manifest_that_does_not_match_sha256sums(sandbox, after_maintenance, tmp_path, edit):
    run_id, _ = after_maintenance
    path = sandbox.backups / run_id / "MANIFEST.json"
    if edit == "append_space":
        path.write_bytes(path.read_bytes() + b" ")
    else:
        doc = json.loads(path.read_bytes())
        doc["policies"]["logs"]["root"] = str(tmp_path / "elsewhere")
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    before = path_tree(sandbox.base)

    r = sandbox.run("restore", "--run", run_id)

    assert r.returncode == 1
    assert "MANIFEST.json" in r.stderr
    assert path_tree(sandbox.base) == before
    assert not (tmp_path / "elsewhere").exists()


def test_restore_refuses_when_sha256sums_lists_no_manifest(sandbox, after_maintenance):
    run_id, _ = after_maintenance
    sums = sandbox.backups / run_id / "SHA256SUMS"
    sums.write_text("".join(line + "\n" for line in sums.read_text().splitlines() if "MANIFEST.json" not in line))
    before = path_tree(sandbox.base)

    r = sandbox.run("restore", "--run", run_id)

    assert r.returncode == 1
    assert path_tree(sandbox.base) == before


# -- usage -------------------------------------------------------------------------------------


def test_restore_of_a_run_no_destination_holds_fails_with_a_message(sandbox, after_maintenance):
    run_id, originals = after_maintenance
    before = path_tree(sandbox.base)

    r = sandbox.run("restore", "--run", "20200101T000000Z-dead")

    assert r.returncode == 1
    assert "20200101T000000Z-dead" in r.stderr
    assert path_tree(sandbox.base) == before


def test_restore_without_run_is_a_usage_error(sandbox):
    r = sandbox.run("restore")
    assert r.returncode == 64
    assert "run" in r.stderr.lower()


@pytest.mark.parametrize("bad", ["latest", "../20261126T031700Z-4f2a", "20261126T031700Z-4F2A", ""])
def test_restore_with_malformed_run_id_is_a_usage_error(sandbox, bad):
    r = sandbox.run("restore", "--run", bad)
    assert r.returncode == 64, r.stderr
