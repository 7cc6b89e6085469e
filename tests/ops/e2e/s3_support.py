"""A real S3 API for the tests: moto's standalone server on a free port of 127.0.0.1,
buckets on it, and a sandbox configured to use one (fixtures in conftest.py)."""

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
REGION = "us-east-1"
PREFIX = "host-a/"
# Distinctive values, so a leak into any file is found by a plain byte search.
ACCESS_KEY = "AKIA" + secrets.token_hex(8).upper()
SECRET_KEY = "qtsTestSecret" + secrets.token_hex(16)
RUN_FILES = ["MANIFEST.json", "SHA256SUMS", "logs.sha256", "logs.tar.zst"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/moto-api/")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


class MotoServer:
    """moto_server as a real process; stop() kills it, start() brings it back on the same port."""

    def __init__(self, log_path: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 20
        while not _answers(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited {self.proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not answer on port {self.port} within 20 s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"total_max_attempts": 1}),
        )


class Bucket:
    def __init__(self, server: MotoServer, name: str, aws_env: dict):
        self.server = server
        self.name = name
        self.env = aws_env
        self.client = server.client()  # the same URL after a restart, so it outlives one

    def create(self, object_lock: bool = False) -> None:
        self.client.create_bucket(Bucket=self.name, ObjectLockEnabledForBucket=object_lock)

    def keys(self, prefix: str = PREFIX) -> list[str]:
        page = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for o in page.get("Contents", []))

    def run_files(self, run_id: str) -> list[str]:
        return sorted(k[len(f"{PREFIX}{run_id}/") :] for k in self.keys(f"{PREFIX}{run_id}/"))

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()


def aws_env(tmp_path: Path) -> dict:
    """What the scripts get of AWS: the test's credentials, and nothing from this host's own
    AWS set-up (config, credentials files, instance metadata)."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def use_s3(
    sandbox, bucket: Bucket, quorum: int = 2, endpoint: str | None = None, extra: list | None = None, **offsite
) -> None:
    """local + offsite (s3) destinations; no credential anywhere in the config."""
    sandbox.config["backup"]["require_verified_copies"] = quorum
    sandbox.config["backup"]["destinations"] = [
        {"name": "local", "type": "local", "path": "var/backups"},
        {
            "name": "offsite",
            "type": "s3",
            "bucket": bucket.name,
            "prefix": PREFIX,
            "endpoint_url": endpoint or bucket.server.url,
            **offsite,
        },
        *(extra or []),
    ]
    sandbox.write_config()


def manifest(sandbox, run_id: str, step: str) -> dict:
    return json.loads((sandbox.run_dir(run_id) / f"{step}.ok.json").read_bytes())


def small_files(sandbox) -> None:
    sandbox.file("a.log", "alpha\n" * 100)
    sandbox.file("deep/er/b.log", os.urandom(3000))
    sandbox.file("c.log", b"")


# --- the whole chain ------------------------------------------------------------------------


# Fixtures: a test module requests them with pytest_plugins = ["s3_support"].


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    if not MOTO_SERVER.exists():
        pytest.skip(f"{MOTO_SERVER} is missing: install moto[server] into the venv (requirements-test.txt)")
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto_server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(moto, tmp_path):
    """A fresh bucket on the (running) server, and the environment the scripts get."""
    if not moto.running():
        moto.start()  # an earlier test stopped it and failed before bringing it back
    b = Bucket(moto, f"qts-{uuid.uuid4().hex[:16]}", aws_env(tmp_path))
    b.create()
    return b


@pytest.fixture
def locked_bucket(moto, tmp_path):
    """A fresh bucket with Object Lock enabled (and so versioning)."""
    if not moto.running():
        moto.start()
    b = Bucket(moto, f"qts-lock-{uuid.uuid4().hex[:12]}", aws_env(tmp_path))
    b.create(object_lock=True)
    return b
