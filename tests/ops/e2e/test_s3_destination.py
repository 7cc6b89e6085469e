"""The S3 destination against a real S3 API: moto's standalone server, a subprocess on a
free port of 127.0.0.1, spoken to over HTTP by the real scripts (boto3 inside them).

One server serves the whole module; each test gets a bucket of its own, so no state is
shared. Credentials reach the scripts only through their environment (the AWS chain),
never through the config. Where a test needs the endpoint to die while the bucket stays
inspectable, a TCP proxy in front of moto is torn down instead of moto itself (a killed
moto forgets every bucket, which would make "nothing was published" trivially true).
The retry tests at the end use a fake client: a real server cannot be made to throttle.
"""

import os
import shutil
import socket
import threading
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from s3_support import (
    ACCESS_KEY,
    PREFIX,
    RUN_FILES,
    SECRET_KEY,
    manifest,
    small_files,
    use_s3,
)

from ops.destinations import s3 as s3mod
from ops.destinations.base import DestinationError
from ops.destinations.s3 import ATTEMPTS, BACKOFF_S, PART_SIZE, S3Destination
from tools.sandbox import log_events

# The shared moto server and bucket fixtures live in s3_support.
pytest_plugins = ["s3_support"]


def test_full_chain_puts_identical_run_on_local_and_s3_with_multipart_archive_then_deletes(sandbox, bucket):
    use_s3(sandbox, bucket, storage_class="STANDARD_IA")
    sandbox.file("big.log", os.urandom(PART_SIZE + (1 << 20)))  # incompressible: the archive exceeds one part
    small_files(sandbox)

    r = sandbox.run("maintenance", env=bucket.env)

    assert r.returncode == 0, r.stderr
    assert sandbox.snapshot() == {}
    run_id = sandbox.runs()[-1]
    assert manifest(sandbox, run_id, "backup")["destinations"] == ["local", "offsite"]
    assert manifest(sandbox, run_id, "verify")["verified"] == ["local", "offsite"]
    assert bucket.keys() == [f"{PREFIX}{run_id}/{n}" for n in RUN_FILES]
    assert sorted(os.listdir(sandbox.backups / run_id)) == RUN_FILES
    for name in RUN_FILES:
        assert bucket.get(f"{PREFIX}{run_id}/{name}") == (sandbox.backups / run_id / name).read_bytes(), name
        head = bucket.client.head_object(Bucket=bucket.name, Key=f"{PREFIX}{run_id}/{name}")
        assert head.get("StorageClass") == "STANDARD_IA", name
    archive = f"{PREFIX}{run_id}/logs.tar.zst"
    head = bucket.client.head_object(Bucket=bucket.name, Key=archive, PartNumber=1)
    assert (sandbox.backups / run_id / "logs.tar.zst").stat().st_size > PART_SIZE
    assert head.get("PartsCount") == 2
    assert "Uploads" not in bucket.client.list_multipart_uploads(Bucket=bucket.name)


def test_offline_endpoint_makes_clean_refuse_and_next_maintenance_starts_a_new_run(sandbox, bucket, moto):
    use_s3(sandbox, bucket)
    small_files(sandbox)
    before = sandbox.snapshot()
    moto.stop()

    r = sandbox.run("maintenance", env=bucket.env)

    assert r.returncode == 1, r.stderr
    assert "Missing: offsite (" in r.stderr
    first = sandbox.runs()[-1]
    backup = manifest(sandbox, first, "backup")
    assert backup["destinations"] == ["local"]
    assert list(backup["failed_destinations"]) == ["offsite"]
    assert not (sandbox.run_dir(first) / "clean.ok.json").exists()
    assert sandbox.snapshot() == before

    port = moto.port
    moto.start()
    assert moto.port == port
    bucket.create()  # a restarted moto starts empty
    r = sandbox.run("maintenance", env=bucket.env)

    assert r.returncode == 0, r.stderr
    assert sandbox.runs()[0] == first and len(sandbox.runs()) == 2
    second = sandbox.runs()[-1]
    assert manifest(sandbox, second, "verify")["verified"] == ["local", "offsite"]
    assert bucket.run_files(second) == RUN_FILES
    assert sandbox.snapshot() == {}


class CuttingProxy:
    """A TCP relay to moto that dies, like a killed server, once ``cut_after`` request bytes
    went through: the listener is closed (new connections refused) and every open
    connection is reset mid-request. moto behind it keeps what it received."""

    def __init__(self, target_port: int, cut_after: int):
        self.target_port = target_port
        self.cut_after = cut_after
        self.sent = 0
        self.cut = threading.Event()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            client.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self.listener.close()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if counted:
                    with self.lock:
                        self.sent += len(data)
                        over = self.sent >= self.cut_after
                    if over:
                        self.kill()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()  # after kill(): SO_LINGER 0 makes this a reset, as from a dead host

    def kill(self) -> None:
        if self.cut.is_set():
            return
        self.cut.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        with self.lock:
            for s in self.sockets:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_endpoint_dying_mid_multipart_upload_publishes_nothing_and_deletes_nothing(sandbox, bucket, request):
    proxy = CuttingProxy(bucket.server.port, cut_after=PART_SIZE // 2)  # halfway through the first part
    request.addfinalizer(proxy.kill)
    use_s3(sandbox, bucket, endpoint=proxy.url)
    sandbox.file("big.log", os.urandom(PART_SIZE + (1 << 20)))
    sandbox.file("a.log", "alpha\n")
    before = sandbox.snapshot()

    r = sandbox.run("maintenance", env=bucket.env)

    assert proxy.cut.is_set(), "the proxy never saw enough bytes to die mid-upload"
    assert r.returncode == 1, r.stderr
    assert "Missing: offsite (" in r.stderr
    assert sandbox.snapshot() == before
    run_id = sandbox.runs()[-1]
    backup = manifest(sandbox, run_id, "backup")
    assert backup["destinations"] == ["local"] and list(backup["failed_destinations"]) == ["offsite"]
    # What the dead endpoint left behind, seen directly on moto: an unfinished upload, no run.
    uploads = bucket.client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])
    assert [u["Key"] for u in uploads] == [f"{PREFIX}{run_id}/logs.tar.zst"]
    assert f"{PREFIX}{run_id}/MANIFEST.json" not in bucket.keys()
    use_s3(sandbox, bucket)  # straight to moto, as after the endpoint came back
    listed = sandbox.run("status", "--runs-on", "offsite", env=bucket.env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == []


# --- verification of what the bucket holds ---------------------------------------------------


def _flip(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 8]) + data[mid + 8 :]


@pytest.mark.parametrize("tamper", [_flip, lambda data: data[: len(data) // 2]], ids=["flipped", "truncated"])
def test_archive_damaged_in_bucket_before_verify_fails_verify_and_clean_refuses(sandbox, bucket, tamper):
    use_s3(sandbox, bucket)
    small_files(sandbox)
    before = sandbox.snapshot()
    assert sandbox.run("scan", env=bucket.env).returncode == 0
    run_id = sandbox.runs()[-1]
    r = sandbox.run("backup", "--run", run_id, env=bucket.env)
    assert r.returncode == 0, r.stderr
    key = f"{PREFIX}{run_id}/logs.tar.zst"
    good = bucket.get(key)
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=tamper(good))

    verify = sandbox.run("verify", "--run", run_id, env=bucket.env)
    clean = sandbox.run("clean", "--run", run_id, env=bucket.env)

    assert verify.returncode == 1, verify.stderr
    outcomes = {
        (e["event"], e["destination"]) for e in log_events(sandbox) if e.get("step") == "verify" and "destination" in e
    }
    assert outcomes == {("destination_verified", "local"), ("verify_failed", "offsite")}
    assert "offsite" in verify.stderr
    assert clean.returncode == 2, clean.stderr
    assert sandbox.snapshot() == before


def test_archive_deleted_from_bucket_after_verify_counts_no_more_for_clean(sandbox, bucket):
    """Between verify and clean (a clean run by hand days later, a lifecycle rule, a
    person), the bucket loses the archive: with both copies required clean deletes
    nothing; with one required it deletes on the local copy alone and catalogues only it."""
    use_s3(sandbox, bucket, quorum=2)
    small_files(sandbox)
    before = sandbox.snapshot()
    for step in ("scan", "backup", "verify"):
        assert sandbox.run(step, env=bucket.env).returncode == 0, step
    run_id = sandbox.runs()[-1]
    key = f"{PREFIX}{run_id}/logs.tar.zst"
    dest = S3Destination("offsite", bucket.name, PREFIX, client=bucket.client)
    assert dest.size(run_id, "logs.tar.zst") == len(bucket.get(key))
    bucket.client.delete_object(Bucket=bucket.name, Key=key)
    with pytest.raises(DestinationError, match="has no logs.tar.zst"):
        dest.size(run_id, "logs.tar.zst")

    clean = sandbox.run("clean", "--run", run_id, env=bucket.env)

    assert clean.returncode == 1, clean.stderr
    assert "1 of 2 verified copies still in place, 2 required; nothing was deleted" in clean.stderr
    assert f"offsite (s3://{bucket.name}/{PREFIX}): run {run_id} has no logs.tar.zst" in clean.stderr
    assert sandbox.snapshot() == before

    # Lowering the quorum does not let this run delete on the copy that is left: it was
    # scanned and copied under a quorum of 2, and is finished under that rule or not at all.
    use_s3(sandbox, bucket, quorum=1)
    clean = sandbox.run("clean", "--run", run_id, env=bucket.env)

    assert clean.returncode == 2, clean.stderr
    assert f"run {run_id} is not continued" in clean.stderr and "has changed since it was scanned" in clean.stderr
    assert sandbox.snapshot() == before
    assert not (sandbox.state / "catalogue" / f"{run_id}.jsonl").exists()


# --- no local state, no credentials, no overwrite ---------------------------------------------


def test_restore_from_bucket_alone_after_state_and_local_copy_are_gone(sandbox, bucket, tmp_path):
    use_s3(sandbox, bucket)
    small_files(sandbox)
    before = sandbox.snapshot()
    mtimes = {rel: int((sandbox.data / rel).stat().st_mtime) for rel in before}
    assert sandbox.run("maintenance", env=bucket.env).returncode == 0
    run_id = sandbox.runs()[-1]
    assert sandbox.snapshot() == {}
    shutil.rmtree(sandbox.state)
    shutil.rmtree(sandbox.backups)

    listed = sandbox.run("status", "--runs-on", "offsite", env=bucket.env)
    target = tmp_path / "restored"
    r = sandbox.run("restore", "--run", run_id, "--dest", "offsite", "--to", str(target), env=bucket.env)

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == [run_id]
    assert r.returncode == 0, r.stderr
    got = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert got == before
    assert {rel: int((target / rel).stat().st_mtime) for rel in got} == mtimes


def test_credentials_from_environment_never_reach_any_file(sandbox, bucket, tmp_path):
    # A third destination on a bucket that does not exist: its error is logged and recorded too.
    use_s3(
        sandbox,
        bucket,
        extra=[{"name": "missing", "type": "s3", "bucket": f"{bucket.name}-nope", "endpoint_url": bucket.server.url}],
    )
    small_files(sandbox)
    before = sandbox.snapshot()

    chain = sandbox.run("maintenance", env=bucket.env)
    run_id = sandbox.runs()[-1]
    restore = sandbox.run(
        "restore", "--run", run_id, "--dest", "offsite", "--to", str(tmp_path / "restored"), env=bucket.env
    )

    assert chain.returncode == 0, chain.stderr
    assert list(manifest(sandbox, run_id, "backup")["failed_destinations"]) == ["missing"]
    assert restore.returncode == 0, restore.stderr
    assert {
        str(p.relative_to(tmp_path / "restored")) for p in (tmp_path / "restored").rglob("*") if p.is_file()
    } == set(before)
    assert (sandbox.logs).is_dir() and any(sandbox.logs.iterdir())
    checked = 0
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            checked += 1
            assert ACCESS_KEY.encode() not in data, f"the access key id is written in {path}"
            assert SECRET_KEY.encode() not in data, f"the secret key is written in {path}"
    assert checked >= 10  # config, manifests, entry files, journal, logs, the local run, restored files
    for out in (chain, restore):
        assert ACCESS_KEY not in out.stdout + out.stderr and SECRET_KEY not in out.stdout + out.stderr


def test_backup_refuses_a_run_already_published_on_the_bucket_and_leaves_it_unchanged(sandbox, bucket):
    use_s3(sandbox, bucket)
    small_files(sandbox)
    before = sandbox.snapshot()
    assert sandbox.run("scan", env=bucket.env).returncode == 0
    run_id = sandbox.runs()[-1]
    key = f"{PREFIX}{run_id}/MANIFEST.json"
    foreign = b'{"format": "qts-ops-run", "note": "published by someone else"}\n'
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=foreign)

    r = sandbox.run("backup", "--run", run_id, env=bucket.env)
    clean = sandbox.run("clean", "--run", run_id, env=bucket.env)

    assert r.returncode == 1, r.stderr
    assert "already holds run" in r.stderr
    assert bucket.get(key) == foreign
    assert bucket.keys() == [key]
    assert not (sandbox.backups / run_id).exists()
    assert not (sandbox.run_dir(run_id) / "backup.ok.json").exists()
    assert clean.returncode == 2
    assert sandbox.snapshot() == before


def test_publish_does_not_overwrite_a_manifest_that_appeared_while_staging(bucket):
    # In-process, with a real client: the conditional write (If-None-Match: *) of MANIFEST.json
    # is the last line of defence when another writer publishes the same run first.
    dest = S3Destination("offsite", bucket.name, PREFIX, client=bucket.client)
    run_id = "20261126T031700Z-4f2a"
    staging = dest.begin_run(run_id)
    staging.create("logs.tar.zst").write(b"our archive")
    staging.create("MANIFEST.json").write(b"our manifest")
    theirs = b"their manifest"
    bucket.client.put_object(Bucket=bucket.name, Key=f"{PREFIX}{run_id}/MANIFEST.json", Body=theirs)

    with pytest.raises(DestinationError, match="already holds run"):
        staging.publish()

    assert bucket.get(f"{PREFIX}{run_id}/MANIFEST.json") == theirs


# --- retries: a fake client, because a real server cannot produce a throttling storm ----------


def _client_error(code: str, status: int, op: str = "HeadObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, op)


class FakeClient:
    """The one client method the retry loop calls, failing with a scripted list of real
    botocore exceptions before answering."""

    def __init__(self, failures: list[Exception]):
        self.failures = list(failures)
        self.calls = 0

    def head_object(self, **kwargs):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {"ContentLength": 1}


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


TRANSIENT = {
    "slowdown": lambda: _client_error("SlowDown", 503),
    "service-unavailable-503": lambda: _client_error("ServiceUnavailable", 503),
    "bare-503": lambda: _client_error("503", 503),
    "connection-refused": lambda: EndpointConnectionError(endpoint_url="http://127.0.0.1:9/"),
}


@pytest.mark.parametrize("make", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_errors_are_retried_with_growing_backoff_then_raise(make, monkeypatch):
    monkeypatch.setattr(s3mod.random, "random", lambda: 0.5)  # jitter at its midpoint: exact delays
    client, sleeps = FakeClient([make() for _ in range(ATTEMPTS)]), Sleeps()
    dest = S3Destination("offsite", "bkt", PREFIX, client=client, sleep=sleeps)

    with pytest.raises(DestinationError, match="head_object failed"):
        dest.has_run("20261126T031700Z-4f2a")

    assert client.calls == ATTEMPTS
    assert sleeps == [BACKOFF_S * 2**i for i in range(ATTEMPTS - 1)]


def test_backoff_jitter_stays_within_half_to_one_and_a_half_of_each_step():
    client, sleeps = FakeClient([_client_error("SlowDown", 503) for _ in range(ATTEMPTS)]), Sleeps()
    dest = S3Destination("offsite", "bkt", PREFIX, client=client, sleep=sleeps)

    with pytest.raises(DestinationError):
        dest.call("head_object", Bucket="bkt", Key="k")

    assert len(sleeps) == ATTEMPTS - 1
    for i, s in enumerate(sleeps):
        assert 0.5 * BACKOFF_S * 2**i <= s <= 1.5 * BACKOFF_S * 2**i


def test_transient_error_followed_by_success_returns_the_answer():
    client, sleeps = FakeClient([_client_error("SlowDown", 503), _client_error("InternalError", 500)]), Sleeps()
    dest = S3Destination("offsite", "bkt", PREFIX, client=client, sleep=sleeps)

    assert dest.has_run("20261126T031700Z-4f2a") is True
    assert client.calls == 3 and len(sleeps) == 2


@pytest.mark.parametrize("code,status", [("AccessDenied", 403), ("InvalidAccessKeyId", 403), ("NoSuchBucket", 404)])
def test_permanent_error_is_not_retried(code, status):
    client, sleeps = FakeClient([_client_error(code, status)]), Sleeps()
    dest = S3Destination("offsite", "bkt", PREFIX, client=client, sleep=sleeps)

    with pytest.raises(DestinationError, match=code):
        dest.call("head_object", Bucket="bkt", Key="k")

    assert client.calls == 1 and sleeps == []


def test_missing_manifest_means_no_run_without_retrying():
    client, sleeps = FakeClient([_client_error("404", 404)]), Sleeps()
    dest = S3Destination("offsite", "bkt", PREFIX, client=client, sleep=sleeps)

    assert dest.has_run("20261126T031700Z-4f2a") is False
    assert client.calls == 1 and sleeps == []


def test_an_s3_bandwidth_caps_uploads_and_downloads(sandbox, bucket):
    """16 MiB to the bucket at 8 MiB/s: backup's upload and verify's download take about
    2 s each; the local destination beside it is not held back by the bucket's limit."""
    use_s3(sandbox, bucket, quorum=2, bandwidth="8MiB/s")
    sandbox.config["pace"] = "full"
    sandbox.write_config()
    sandbox.file("big.log", os.urandom(16 << 20))
    assert sandbox.run("scan", env=bucket.env).returncode == 0
    for step in ("backup", "verify"):
        started = time.monotonic()
        r = sandbox.run(step, env=bucket.env)
        took = time.monotonic() - started
        assert r.returncode == 0, r.stderr
        assert took >= 1.9, f"{step}: 16 MiB through an 8 MiB/s bandwidth took {took:.2f} s"
        assert manifest(sandbox, sandbox.runs()[-1], step)["throttled_s"] >= 1.5
    assert sandbox.run("clean", env=bucket.env).returncode == 0
    assert not (sandbox.data / "logs/big.log").exists()


def test_a_host_that_lost_its_state_rebuilds_its_catalogue_from_s3(sandbox, bucket):
    use_s3(sandbox, bucket)
    small_files(sandbox)
    before = sandbox.snapshot()
    assert sandbox.run("maintenance", env=bucket.env).returncode == 0
    shutil.rmtree(sandbox.state)
    shutil.rmtree(sandbox.backups)  # the host's disk is gone too: only the bucket is left
    r = sandbox.run("catalogue_rebuild", "--dest", "offsite", "-v", env=bucket.env)
    assert r.returncode == 0, r.stderr
    assert "1 runs (3 files) added" in r.stderr
    r = sandbox.run("restore", "--file", str(sandbox.data / "logs" / "*"), env=bucket.env)
    assert r.returncode == 0, r.stderr
    assert sandbox.snapshot() == before
