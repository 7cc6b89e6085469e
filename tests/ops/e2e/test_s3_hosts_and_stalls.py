"""S3 destinations that stall, hosts that share a bucket, and restore across both: the real
scripts as processes against moto's standalone server (the module's own, started as
test_s3_destination.py starts it) and against real sockets that accept and never answer.

A stalled endpoint is a listener that accepts every connection and never says a word; one
that stalls midway is a relay to moto that goes silent on command. Their configured timeouts
are a second or so, which keeps these tests fast; the bound each test checks is far below
the five minutes a silent endpoint used to cost each call. Another host is a real one: its
chain runs in a UTS namespace of its own, under another hostname (``unshare -u``).
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from s3_support import PREFIX, REGION, aws_env, manifest, small_files

from ops.destinations.base import DestinationError
from ops.destinations.s3 import S3Destination
from tools.sandbox import SCRIPTS, Sandbox, log_events

FAST = {"connect_timeout": 1, "read_timeout": 1, "deadline": 3}

# The shared moto server and bucket fixtures live in s3_support.
pytest_plugins = ["s3_support"]


class Silent:
    """A TCP listener that accepts every connection and never answers: a hung endpoint."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)
            self._accepted(conn)

    def _accepted(self, conn: socket.socket) -> None:
        """Read nothing, write nothing."""

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.listener.close()
        for conn in self.held:
            conn.close()


class GoesSilent(Silent):
    """A relay to moto until ``stall()``; from then on every new connection is held unanswered."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.stalled = threading.Event()
        super().__init__()

    def stall(self) -> None:
        self.stalled.set()

    def _accepted(self, conn: socket.socket) -> None:
        if self.stalled.is_set():
            return
        conn.settimeout(None)
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        self.held.append(upstream)
        for src, dst in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def silent(request):
    endpoint = Silent()
    request.addfinalizer(endpoint.close)
    return endpoint


def offsite(bucket_name: str, endpoint: str, prefix: str = PREFIX, **extra) -> dict:
    return {"name": "offsite", "type": "s3", "bucket": bucket_name, "prefix": prefix, "endpoint_url": endpoint, **extra}


def configure(sandbox: Sandbox, *destinations: dict, quorum: int = 1) -> None:
    sandbox.config["backup"]["destinations"] = list(destinations)
    sandbox.config["backup"]["require_verified_copies"] = quorum
    sandbox.write_config()


LOCAL = {"name": "local", "type": "local", "path": "var/backups"}


def timed(sandbox: Sandbox, *args, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    r = sandbox.run(*args, env=env)
    return r, time.monotonic() - started


# --- D10: a destination that does not answer ------------------------------------------------------


def test_a_silent_endpoint_is_a_destination_error_within_its_deadline(silent, monkeypatch, tmp_path):
    for k, v in aws_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    dest = S3Destination("offsite", "bkt", PREFIX, endpoint_url=silent.url, region=REGION, **FAST)
    run_id = "20261126T031700Z-4f2a"

    for call in (
        lambda: dest.has_run(run_id),
        lambda: dest.open_read(run_id, "MANIFEST.json"),
        lambda: dest.list_runs(),
    ):
        started = time.monotonic()
        with pytest.raises(DestinationError, match="timeout"):
            call()
        assert time.monotonic() - started < FAST["deadline"] + 1


def test_maintenance_with_a_silent_destination_drops_it_and_finishes_on_the_other(sandbox, silent, tmp_path):
    configure(sandbox, LOCAL, offsite("qts-nowhere", silent.url, **FAST))
    small_files(sandbox)

    r, took = timed(sandbox, "maintenance", env=aws_env(tmp_path))

    assert r.returncode == 0, r.stderr
    assert took < 30, f"maintenance took {took:.0f} s"
    assert "Traceback" not in r.stderr
    run_id = sandbox.runs()[-1]
    backup = manifest(sandbox, run_id, "backup")
    assert backup["destinations"] == ["local"]
    assert "timeout" in backup["failed_destinations"]["offsite"]
    assert sorted(os.listdir(sandbox.backups / run_id)) == [
        "MANIFEST.json",
        "SHA256SUMS",
        "logs.sha256",
        "logs.tar.zst",
    ]
    assert sandbox.snapshot() == {}


def test_status_answers_in_seconds_whatever_the_configured_patience(sandbox, silent, tmp_path):
    configure(sandbox, LOCAL, offsite("qts-nowhere", silent.url, read_timeout=120, deadline=600))

    r, took = timed(sandbox, "status", env=aws_env(tmp_path))
    listed, took_listing = timed(sandbox, "status", "--runs-on", "offsite", env=aws_env(tmp_path))

    assert r.returncode == 0, r.stderr
    assert "destination offsite: error: " in r.stdout and "timeout" in r.stdout
    assert took < 20, f"status took {took:.0f} s"
    assert listed.returncode == 1
    assert "cannot list the runs on destination offsite" in listed.stderr
    assert took_listing < 20, f"status --runs-on took {took_listing:.0f} s"


def test_clean_with_a_destination_gone_silent_after_verify_goes_on_with_the_others(sandbox, bucket, request):
    relay = GoesSilent(bucket.server.port)
    request.addfinalizer(relay.close)
    configure(sandbox, LOCAL, offsite(bucket.name, relay.url, **FAST))
    small_files(sandbox)
    for step in ("scan", "backup", "verify"):
        assert sandbox.run(step, env=bucket.env).returncode == 0, step
    run_id = sandbox.runs()[-1]
    assert manifest(sandbox, run_id, "verify")["verified"] == ["local", "offsite"]
    relay.stall()

    r, took = timed(sandbox, "clean", "--run", run_id, env=bucket.env)

    assert r.returncode == 0, r.stderr
    assert took < 30, f"clean took {took:.0f} s"
    assert sandbox.snapshot() == {}
    assert [e["destination"] for e in log_events(sandbox) if e["event"] == "copy_missing"] == ["offsite"]
    catalogued = (sandbox.state / "catalogue" / f"{run_id}.jsonl").read_text().splitlines()
    assert {tuple(json.loads(line)["destinations"]) for line in catalogued} == {("local",)}


# --- D11: restore goes on to the next destination ---------------------------------------------------


def test_restore_passes_over_a_first_destination_gone_silent(sandbox, bucket, tmp_path, request):
    relay = GoesSilent(bucket.server.port)
    request.addfinalizer(relay.close)
    configure(sandbox, offsite(bucket.name, relay.url, **FAST), LOCAL, quorum=2)  # the bucket is tried first
    small_files(sandbox)
    before = sandbox.snapshot()
    assert sandbox.run("maintenance", env=bucket.env).returncode == 0
    run_id = sandbox.runs()[-1]
    relay.stall()

    r, took = timed(sandbox, "restore", "--run", run_id, "--to", str(tmp_path / "out"), "-v", env=bucket.env)
    one = sandbox.data / "logs" / "a.log"
    by_file = sandbox.run("restore", "--file", str(one), "-v", env=bucket.env)

    assert r.returncode == 0, r.stderr
    assert took < 30, f"restore took {took:.0f} s"
    assert "restore: passed over destination offsite: " in r.stderr and "timeout" in r.stderr
    assert "files restored to" in r.stderr and "from local" in r.stderr
    out = tmp_path / "out" / "logs"
    assert {str(Path("logs") / p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert by_file.returncode == 0, by_file.stderr
    assert "passed over destination offsite" in by_file.stderr and f"from run {run_id} on local" in by_file.stderr
    assert one.read_bytes() == before["logs/a.log"]


# --- D9: on a shared bucket, a rewritten run is refused -----------------------------------------------


def test_run_rewritten_in_a_shared_bucket_with_checksums_to_match_is_refused(bucket, tmp_path):
    a, b = Sandbox(tmp_path / "host-a"), Sandbox(tmp_path / "host-b")
    for host, prefix in ((a, "host-a/"), (b, "host-b/")):
        configure(host, LOCAL, offsite(bucket.name, bucket.server.url, prefix=prefix))
        host.file("app.log", f"the log of {prefix}\n" * 50)
        assert host.run("maintenance", env=bucket.env).returncode == 0
    ra, rb = a.runs()[-1], b.runs()[-1]
    sums_key = f"host-b/{rb}/SHA256SUMS"
    sums = dict(reversed(line.split("  ")) for line in bucket.get(sums_key).decode().splitlines())
    for name in ("logs.tar.zst", "logs.sha256"):
        data = bucket.get(f"host-a/{ra}/{name}")
        bucket.client.put_object(Bucket=bucket.name, Key=f"host-b/{rb}/{name}", Body=data)
        sums[name] = hashlib.sha256(data).hexdigest()
    bucket.client.put_object(
        Bucket=bucket.name,
        Key=sums_key,
        Body="".join(f"{sha}  {name}\n" for name, sha in sorted(sums.items())).encode(),
    )
    out, mine = tmp_path / "out", b.data / "logs" / "app.log"

    by_run = b.run("restore", "--run", rb, "--dest", "offsite", "--to", str(out), env=bucket.env)
    by_file = b.run("restore", "--file", str(mine), "--dest", "offsite", env=bucket.env)

    assert by_run.returncode == 1, by_run.stderr
    assert f"SHA256SUMS is not the one the local state of run {rb} records" in by_run.stderr
    assert by_file.returncode == 1, by_file.stderr
    assert "SHA-256 checked" not in by_file.stderr
    assert not out.exists() and not mine.exists()

    shutil.rmtree(b.state)  # no local state: MANIFEST.json's own digests still disagree
    by_run = b.run("restore", "--run", rb, "--dest", "offsite", "--to", str(out), env=bucket.env)
    assert by_run.returncode == 1, by_run.stderr
    assert "MANIFEST.json records another SHA-256 for logs.tar.zst than SHA256SUMS" in by_run.stderr
    assert not out.exists()


# --- D12: hosts that share a prefix -------------------------------------------------------------------


def run_as_host(hostname: str, sandbox: Sandbox, script: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    """scripts/<script>.py in a UTS namespace of its own whose hostname is ``hostname``."""
    cmd = [
        "unshare",
        "-u",
        "sh",
        "-c",
        f'hostname {hostname} && exec "$0" "$@"',
        sys.executable,
        str(SCRIPTS / f"{script}.py"),
        "--config",
        str(sandbox.config_path),
        *args,
    ]
    full_env = {**os.environ, "QTS_OPS_PRIORITY": "normal", **env}
    full_env.pop("QTS_OPS_LOCK_FD", None)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=120, cwd=sandbox.base)


def test_hosts_sharing_a_prefix_are_told_apart_and_restore_keeps_the_other_hosts_run_out_of_its_roots(bucket, tmp_path):
    a, b = Sandbox(tmp_path / "host-a"), Sandbox(tmp_path / "host-b")
    for host in (a, b):
        configure(host, LOCAL, offsite(bucket.name, bucket.server.url))  # the same prefix: the mistake
    small_files(b)
    theirs = b.snapshot()
    r = run_as_host("hostb", b, "maintenance", env=bucket.env)
    assert r.returncode == 0, r.stderr
    rb = b.runs()[-1]
    assert json.loads(bucket.get(f"{PREFIX}{rb}/MANIFEST.json"))["identity"]["host"] == "hostb"
    a.file("mine.log", "host A's own\n")

    r = a.run("maintenance", env=bucket.env)

    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "another host" in line]
    assert warned == [
        f"qts-ops warning: destination offsite (s3://{bucket.name}/{PREFIX}) also holds runs of another host "
        f"(hostb, e.g. run {rb}); give each host a prefix or directory of its own "
        "(make status DEST=offsite lists them)"
    ]
    assert [e["host"] for e in log_events(a) if e["event"] == "other_host_runs"] == ["hostb"]
    ra = a.runs()[-1]

    listed = a.run("status", "--runs-on", "offsite", env=bucket.env)
    status = json.loads(a.run("status", "--json", env=bucket.env).stdout)
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.splitlines()) == sorted([ra, f"{rb}\tanother host: hostb"])
    assert status["destinations"]["offsite"]["other_hosts"] == {rb: "hostb"}
    assert any("run(s) of other hosts (hostb)" in p for p in status["problems"])

    refused = a.run("restore", "--run", rb, env=bucket.env)
    assert refused.returncode == 1, refused.stderr
    assert f"run {rb} is a run of host 'hostb'" in refused.stderr and "FROM_OTHER_HOST=1" in refused.stderr
    assert a.snapshot() == {}

    looked = a.run("restore", "--run", rb, "--to", str(tmp_path / "look"), env=bucket.env)
    assert looked.returncode == 0, looked.stderr
    told = a.run("restore", "--run", rb, "--from-other-host", env=bucket.env)
    assert told.returncode == 0, told.stderr
    assert a.snapshot() == theirs


@pytest.mark.parametrize(
    "key,value",
    [("read_timeout", 0), ("connect_timeout", "fast"), ("deadline", True), ("read_timeout", -5), ("deadline", ".nan")],
)
def test_timeouts_are_validated_with_a_message_naming_the_key(sandbox, key, value):
    configure(sandbox, LOCAL, offsite("qts-nowhere", "http://127.0.0.1:9", **{key: value}))
    if value == ".nan":  # YAML's own NaN, which a float() would accept
        sandbox.config_path.write_text(sandbox.config_path.read_text().replace("'.nan'", ".nan"))

    r = sandbox.run("plan")

    assert r.returncode == 78, r.stderr
    assert f"backup.destinations[1].{key}: " in r.stderr


def test_timeouts_take_seconds_or_a_duration(sandbox):
    configure(sandbox, LOCAL, offsite("qts-nowhere", "http://127.0.0.1:9", connect_timeout=2.5, read_timeout="2m"))
    assert sandbox.run("plan").returncode == 0
