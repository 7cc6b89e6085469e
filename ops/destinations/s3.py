"""An S3-compatible destination (AWS S3, MinIO, Ceph RGW): ``<prefix><run_id>/<file>``.

boto3 is imported only when an S3 destination is used, so hosts without one pay nothing.
Credentials come from the standard AWS chain (environment, profile, instance role) and
nothing here ever writes or logs them.

A run is published by writing its MANIFEST.json last, with ``If-None-Match: *`` so a
published run is never overwritten. Files are streamed up in parts (multipart uploads
with an SDK SHA-256 checksum per part), so memory stays at one part per open file.
Objects of an attempt that never published (no MANIFEST.json) are not a backup anyone
relies on; a retry replaces them and says so. Transient errors (timeouts, 5xx,
throttling) are retried with exponential backoff and jitter, a bounded number of times,
and only while another attempt could still end before the call's deadline. Every
failure, whatever botocore or the network raised, leaves here as a DestinationError.
"""

import io
import random
import time
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from ops.destinations.base import Destination, DestinationError, Staging
from ops.state.manifest import RUN_ID_RE
from ops.sys.budget import READS, Budget, metered
from ops.sys.gather import Gatherer
from ops.sys.sizes import CHUNK, MiB

PART_SIZE = 16 * MiB  # S3's minimum part is 5 MiB; 16 MiB x 10,000 parts = 160 GiB per object
ATTEMPTS = 5
BACKOFF_S = 0.25
BACKOFF_CAP_S = 4.0
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
    "502",
    "504",
}


def _response(exc: BaseException | None) -> dict:
    """The parsed S3 answer an exception carries; {} for one that has none (a timeout, a
    reset: botocore then sets ``response`` to None, or no such attribute at all)."""
    response = getattr(exc, "response", None)
    return response if isinstance(response, dict) else {}


def _is_transient(exc: Exception) -> bool:
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, (BotoConnectionError, HTTPClientError, OSError)):
        return True  # refused, reset, timed out: the endpoint may come back
    if isinstance(exc, ClientError):
        response = _response(exc)
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
        return _error_code(exc) in _TRANSIENT_CODES or status >= 500 or status == 429
    return False


def _error_code(exc: BaseException | None) -> str:
    error = _response(exc).get("Error")
    return str(error.get("Code", "")) if isinstance(error, dict) else ""


def _is_missing(exc: DestinationError) -> bool:
    """A DestinationError from ``call`` that says the object is not there (HEAD answers a bare 404)."""
    return _error_code(exc.__cause__) in ("404", "NoSuchKey", "NotFound")


class _Body(io.RawIOBase):
    """An object's body as a raw stream: a read that times out or breaks off mid-body is a
    DestinationError like any other failure here (botocore raises its own kinds), and
    wrapped in a BufferedReader it iterates by lines (botocore's body by 1 KiB chunks)."""

    def __init__(self, body, what: str):
        super().__init__()
        self._body = body
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        from botocore.exceptions import BotoCoreError

        try:
            return self._body.readinto(buffer)
        except (BotoCoreError, OSError) as exc:
            raise DestinationError(f"{self._what} failed: {exc}") from exc

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3Destination(Destination):
    def __init__(
        self,
        name: str,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        storage_class: str | None = None,
        client=None,
        sleep=time.sleep,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        deadline: float = 120.0,
        bandwidth: int | None = None,
        lock: tuple[str, int] | None = None,
        sse: tuple[str, str | None] | None = None,
    ):
        super().__init__(name)
        self.lock = lock  # (mode, seconds retained) of every object written, or None
        self.sse = sse  # (ServerSideEncryption, SSEKMSKeyId or None) every upload requests, or None
        self.budget = Budget(bandwidth)  # uploads and downloads alike, at most this many bytes/s
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.storage_class = storage_class
        self._client = client
        self._sleep = sleep

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                # Our own bounded retry below decides what is transient; the SDK's is off
                # so the two do not multiply.
                config=Config(
                    retries={"total_max_attempts": 1},
                    connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                    request_checksum_calculation="when_supported",
                ),
            )
        return self._client

    def describe(self) -> str:
        return f"{self.name} (s3://{self.bucket}/{self.prefix})"

    def key(self, run_id: str, name: str = "") -> str:
        return f"{self.prefix}{run_id}/{name}"

    def call(self, operation: str, **kwargs):
        """One S3 request, retried while the error is transient and another attempt could
        still end before ``deadline``; DestinationError after. A silent endpoint costs
        ``read_timeout`` per attempt: five in a row were five minutes of a step."""
        from botocore.exceptions import BotoCoreError, ClientError

        started = time.monotonic()
        for attempt in range(ATTEMPTS):
            try:
                return getattr(self.client, operation)(**kwargs)
            # ValueError: a client that cannot be built (a malformed endpoint_url)
            except (ClientError, BotoCoreError, OSError, ValueError) as exc:
                delay = min(BACKOFF_CAP_S, BACKOFF_S * 2**attempt) * (0.5 + random.random())
                worst_end = time.monotonic() - started + delay + self.connect_timeout + self.read_timeout
                if not _is_transient(exc) or attempt == ATTEMPTS - 1 or worst_end > self.deadline:
                    raise DestinationError(f"{self.describe()}: {operation} failed: {exc}") from exc
                self._sleep(delay)
        raise AssertionError("unreachable")

    def has_run(self, run_id: str) -> bool:
        try:
            self.call("head_object", Bucket=self.bucket, Key=self.key(run_id, "MANIFEST.json"))
            return True
        except DestinationError as exc:
            if _is_missing(exc):
                return False
            raise

    def list_runs(self) -> list[str]:
        runs, token = [], None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": self.prefix, "Delimiter": "/"}
            if token:
                kw["ContinuationToken"] = token
            page = self.call("list_objects_v2", **kw)
            for cp in page.get("CommonPrefixes", []):
                run_id = cp["Prefix"][len(self.prefix) :].rstrip("/")
                if RUN_ID_RE.match(run_id) and self.has_run(run_id):
                    runs.append(run_id)
            if not page.get("IsTruncated"):
                return sorted(runs)
            token = page["NextContinuationToken"]

    def bytes_used(self) -> int:
        total, token = 0, None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": self.prefix}
            if token:
                kw["ContinuationToken"] = token
            page = self.call("list_objects_v2", **kw)
            total += sum(o["Size"] for o in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return total
            token = page["NextContinuationToken"]

    def object_options(self) -> dict:
        """What every object written is written with: storage class, encryption, lock."""
        out = {"StorageClass": self.storage_class} if self.storage_class else {}
        if self.sse:
            out["ServerSideEncryption"] = self.sse[0]
            if self.sse[1]:
                out["SSEKMSKeyId"] = self.sse[1]
        if self.lock:
            until = datetime.now(UTC) + timedelta(seconds=self.lock[1])
            out.update(ObjectLockMode=self.lock[0].upper(), ObjectLockRetainUntilDate=until)
        return out

    def check_lockable(self) -> None:
        """A bucket asked for locked objects must have Object Lock enabled."""
        try:
            conf = self.call("get_object_lock_configuration", Bucket=self.bucket)
            enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        except DestinationError as exc:
            if _error_code(exc.__cause__) not in ("ObjectLockConfigurationNotFoundError", "404"):
                raise
            enabled = False
        if not enabled:
            raise DestinationError(
                f"bucket {self.bucket} lacks object lock, which object_lock of destination {self.name} asks for; "
                "create the bucket with Object Lock enabled (it cannot be added to this one by the toolkit)"
            )

    def check_objects(self, run_id: str, names: list[str]) -> None:
        """Each object of the run reports the lock and encryption this destination writes with;
        DestinationError naming the first that does not (its copy then counts for nothing)."""
        if not (self.lock or self.sse):
            return
        now = datetime.now(UTC)
        for name in names:
            head = self._on_file("head_object", run_id, name)
            if self.lock:
                until = head.get("ObjectLockRetainUntilDate")
                if head.get("ObjectLockMode") != self.lock[0].upper() or until is None or until <= now:
                    raise DestinationError(
                        f"{self.describe()}: {run_id}/{name} is not locked {self.lock[0]} "
                        f"(it reports {head.get('ObjectLockMode') or 'no lock'}, until {until})"
                    )
            if self.sse and head.get("ServerSideEncryption") != self.sse[0]:
                raise DestinationError(
                    f"{self.describe()}: {run_id}/{name} is not encrypted {self.sse[0]} "
                    f"(it reports {head.get('ServerSideEncryption') or 'none'})"
                )

    def begin_run(self, run_id: str) -> "S3Staging":
        if self.lock:
            self.check_lockable()
        if self.has_run(run_id):
            raise DestinationError(
                f"{self.describe()} already holds run {run_id}; refusing to overwrite a published run"
            )
        page = self.call("list_objects_v2", Bucket=self.bucket, Prefix=self.key(run_id))
        leftovers = [o["Key"] for o in page.get("Contents", [])]
        return S3Staging(self, run_id, leftovers)

    def begin_repair(self, run_id: str) -> "S3Staging":
        """The objects there are copied aside first (``<prefix>.<run>.damaged-<time>/``, on the
        store itself), so a bucket without versions keeps the damaged copy too."""
        if self.lock:
            self.check_lockable()
        page = self.call("list_objects_v2", Bucket=self.bucket, Prefix=self.key(run_id))
        aside = f"{self.prefix}.{run_id}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}/"
        for obj in page.get("Contents", []):  # through this host: a server-side copy of a locked
            name = obj["Key"][len(self.key(run_id)) :]  # object is refused by some stores
            out = _Upload(self, aside + name)
            try:
                self.copy_into(run_id, name, out)
                out.finish()
            except BaseException:
                out.abort()
                raise
        return S3Staging(self, run_id, [], replace=True)

    def _on_file(self, operation: str, run_id: str, name: str) -> dict:
        """``operation`` on one published file of a run; a missing file says so plainly."""
        try:
            return self.call(operation, Bucket=self.bucket, Key=self.key(run_id, name))
        except DestinationError as exc:
            if _is_missing(exc):
                raise DestinationError(f"{self.describe()}: run {run_id} has no {name}") from None
            raise

    def size(self, run_id: str, name: str) -> int:
        return self._on_file("head_object", run_id, name)["ContentLength"]

    def open_read(self, run_id: str, name: str) -> BinaryIO:
        body = self._on_file("get_object", run_id, name)["Body"]
        reader = io.BufferedReader(_Body(body, f"{self.describe()}: reading {run_id}/{name}"), CHUNK)
        return metered(reader, CHUNK, READS, self.budget)


class _Upload:
    """A write-only file streamed to one object in parts; nothing is visible until ``finish``.

    Writes are gathered into parts of exactly PART_SIZE bytes (ops/sys/gather.py), each
    sent as it fills; a part that fails is kept as the upload's error, raised by every
    later write and by ``finish``: an object with a part missing is never completed.
    """

    def __init__(self, dest: S3Destination, key: str):
        self.dest = dest
        self.key = key
        self._gather = Gatherer(self._send_part, PART_SIZE, exact=True)
        self.parts: list[dict] = []
        self.upload_id: str | None = None

    def _extra(self) -> dict:
        return self.dest.object_options()

    def write(self, data) -> int:
        return self._gather.write(data)

    def flush(self) -> None:
        pass  # parts go up when full; the rest at finish()

    def _send_part(self, body: bytes) -> None:
        d = self.dest
        if self.upload_id is None:
            self.upload_id = d.call(
                "create_multipart_upload", Bucket=d.bucket, Key=self.key, ChecksumAlgorithm="SHA256", **self._extra()
            )["UploadId"]
        n = len(self.parts) + 1
        d.budget.take(len(body))
        resp = d.call(
            "upload_part",
            Bucket=d.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=n,
            Body=body,
            ChecksumAlgorithm="SHA256",
        )
        self.parts.append({"PartNumber": n, "ETag": resp["ETag"], "ChecksumSHA256": resp.get("ChecksumSHA256")})

    def finish(self, only_if_new: bool = False) -> None:
        d = self.dest
        cond = {"IfNoneMatch": "*"} if only_if_new else {}
        self._gather.raise_kept()
        if self.upload_id is None:  # less than a part: one request, no multipart upload
            body = self._gather.take()
            d.budget.take(len(body))
            try:
                d.call(
                    "put_object",
                    Bucket=d.bucket,
                    Key=self.key,
                    Body=body,
                    ChecksumAlgorithm="SHA256",
                    **cond,
                    **self._extra(),
                )
            except BaseException as exc:
                self._gather.fail(exc)  # its bytes are taken: a second finish must not put an empty object
                raise
            return
        self._gather.flush()
        parts = [{k: v for k, v in p.items() if v is not None} for p in self.parts]
        d.call(
            "complete_multipart_upload",
            Bucket=d.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
            **cond,
        )
        if d.lock:  # some stores (moto among them) ignore the lock asked for at CreateMultipartUpload
            lock = d.object_options()
            d.call(
                "put_object_retention",
                Bucket=d.bucket,
                Key=self.key,
                Retention={"Mode": lock["ObjectLockMode"], "RetainUntilDate": lock["ObjectLockRetainUntilDate"]},
            )

    def abort(self) -> None:
        if self.upload_id is not None:
            try:
                self.dest.call("abort_multipart_upload", Bucket=self.dest.bucket, Key=self.key, UploadId=self.upload_id)
            except DestinationError:
                pass  # the bucket's lifecycle rule for incomplete uploads is the backstop


class S3Staging(Staging):
    def __init__(self, dest: S3Destination, run_id: str, leftovers: list[str], replace: bool = False):
        self.replace = replace  # a repair: MANIFEST.json is written over, not only if absent
        self.dest = dest
        self.run_id = run_id
        self.leftovers = leftovers  # objects of an unpublished attempt, replaced by this one
        self.uploads: dict[str, _Upload] = {}

    def create(self, name: str) -> _Upload:
        upload = _Upload(self.dest, self.dest.key(self.run_id, name))
        self.uploads[name] = upload
        return upload

    def publish(self) -> None:
        manifest = self.uploads.pop("MANIFEST.json", None)
        if manifest is None:
            raise DestinationError("a run cannot be published without its MANIFEST.json")
        for upload in self.uploads.values():
            upload.finish()
        # Last, and only if absent: its presence is what makes the run exist.
        try:
            manifest.finish(only_if_new=not self.replace)
        except DestinationError as exc:
            if _error_code(exc.__cause__) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise DestinationError(
                    f"{self.dest.describe()} already holds run {self.run_id}; not overwritten"
                ) from None
            raise
        self.uploads.clear()

    def abort(self) -> None:
        for upload in self.uploads.values():
            upload.abort()
        self.uploads.clear()
