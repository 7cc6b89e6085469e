"""S3 Object Lock and server-side encryption against moto's server: every object of a run is
written locked (multipart ones too, whose lock moto ignores at CreateMultipartUpload and the
toolkit sets with PutObjectRetention before publishing) and cannot be deleted; a bucket
without Object Lock fails the destination at backup, naming the bucket, and nothing is
deleted; encryption is requested on every upload, and a copy whose object does not report
it is not a verified copy.

What moto cannot do is checked no further: it does not enforce encryption at rest (it
records and reports what was requested), and GetObjectRetention answers 500, so the lock is
read from HeadObject, as a real store reports it too."""

import os

import pytest
from botocore.exceptions import ClientError
from s3_support import PREFIX, manifest, small_files, use_s3

from ops.destinations.s3 import PART_SIZE

pytest_plugins = ["s3_support"]

LOCK = {"mode": "compliance", "retain": "1d"}


def _keys(bucket, run_id):
    return [f"{PREFIX}{run_id}/{name}" for name in bucket.run_files(run_id)]


def test_with_object_lock_every_object_of_a_run_is_locked_and_cannot_be_deleted(sandbox, locked_bucket):
    use_s3(sandbox, locked_bucket, object_lock=LOCK)
    sandbox.file("big.log", os.urandom(PART_SIZE + (1 << 20)))  # a multipart archive
    small_files(sandbox)
    r = sandbox.run("maintenance", env=locked_bucket.env)
    assert r.returncode == 0, r.stderr
    run_id = sandbox.runs()[-1]
    assert manifest(sandbox, run_id, "verify")["verified"] == ["local", "offsite"]
    keys = _keys(locked_bucket, run_id)
    assert len(keys) == 4
    c = locked_bucket.client
    for key in keys:
        head = c.head_object(Bucket=locked_bucket.name, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"], key
        version = head["VersionId"]
        with pytest.raises(ClientError):
            c.delete_object(Bucket=locked_bucket.name, Key=key, VersionId=version)
    assert not (sandbox.data / "logs/big.log").exists()


def test_a_bucket_without_object_lock_fails_the_destination_and_nothing_is_deleted(sandbox, bucket):
    use_s3(sandbox, bucket, object_lock=LOCK)
    small_files(sandbox)
    before = sandbox.snapshot()
    r = sandbox.run("maintenance", env=bucket.env)
    assert r.returncode != 0
    assert f"bucket {bucket.name} lacks object lock" in r.stderr
    assert sandbox.snapshot() == before


def test_sse_is_requested_on_every_upload_and_checked_by_verify(sandbox, bucket):
    use_s3(sandbox, bucket, sse="AES256")
    sandbox.file("big.log", os.urandom(PART_SIZE + (1 << 20)))
    small_files(sandbox)
    assert sandbox.run("scan", env=bucket.env).returncode == 0
    assert sandbox.run("backup", env=bucket.env).returncode == 0
    run_id = sandbox.runs()[-1]
    for key in _keys(bucket, run_id):
        assert bucket.client.head_object(Bucket=bucket.name, Key=key)["ServerSideEncryption"] == "AES256", key
    # The same bytes written again without encryption: the copy is not what was asked for.
    key = f"{PREFIX}{run_id}/SHA256SUMS"
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=bucket.get(key))
    r = sandbox.run("verify", env=bucket.env)
    assert r.returncode == 1 and "is not encrypted AES256" in r.stderr
    assert (sandbox.data / "logs/big.log").exists()


@pytest.mark.parametrize(
    ("offsite", "key"),
    [
        ({"object_lock": {"mode": "compliance"}}, "object_lock"),
        ({"object_lock": {"mode": "forever", "retain": "7y"}}, "object_lock.mode"),
        ({"object_lock": {"mode": "governance", "retain": "0y"}}, "object_lock.retain"),
        ({"sse": "rot13"}, "sse"),
        ({"sse": "AES256", "sse_kms_key_id": "alias/qts"}, "sse_kms_key_id"),
    ],
)
def test_bad_protection_settings_are_refused_naming_the_key(sandbox, bucket, offsite, key):
    use_s3(sandbox, bucket, **offsite)
    r = sandbox.run("plan", env=bucket.env)
    assert r.returncode == 78 and f"backup.destinations[1].{key}:" in r.stderr, r.stderr


def test_scrub_repairs_a_damaged_copy_in_a_locked_bucket_from_the_local_one(sandbox, locked_bucket):
    use_s3(sandbox, locked_bucket, object_lock=LOCK)
    small_files(sandbox)
    assert sandbox.run("maintenance", env=locked_bucket.env).returncode == 0
    run_id = sandbox.runs()[-1]
    key = f"{PREFIX}{run_id}/logs.tar.zst"
    good = locked_bucket.get(key)
    locked_bucket.client.put_object(Bucket=locked_bucket.name, Key=key, Body=good[:-1] + bytes([good[-1] ^ 1]))
    r = sandbox.run("scrub", "--all", "-v", env=locked_bucket.env)
    assert r.returncode == 0, r.stderr
    assert "offsite: 1 checked, 1 damaged, 1 repaired" in r.stderr
    assert locked_bucket.get(key) == good
    head = locked_bucket.client.head_object(Bucket=locked_bucket.name, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    versions = locked_bucket.client.list_object_versions(Bucket=locked_bucket.name, Prefix=key)["Versions"]
    assert len(versions) == 3, "a locked version was touched"  # the first, the damaged one, the repair
    aside = [k for k in locked_bucket.keys(f"{PREFIX}.{run_id}.damaged-") if k.endswith("/logs.tar.zst")]
    assert len(aside) == 1 and locked_bucket.get(aside[0]) != good, "the damaged copy was not kept aside"


def test_scrub_checks_encryption_too_and_writes_the_copy_again(sandbox, bucket):
    use_s3(sandbox, bucket, sse="AES256")
    small_files(sandbox)
    assert sandbox.run("maintenance", env=bucket.env).returncode == 0
    run_id = sandbox.runs()[-1]
    for key in _keys(bucket, run_id):  # the same bytes, written again without encryption
        bucket.client.put_object(Bucket=bucket.name, Key=key, Body=bucket.get(key))
    r = sandbox.run("scrub", "--all", "-v", env=bucket.env)
    assert r.returncode == 0, r.stderr
    assert "offsite: 1 checked, 1 damaged, 1 repaired" in r.stderr
    for key in _keys(bucket, run_id):
        assert bucket.client.head_object(Bucket=bucket.name, Key=key)["ServerSideEncryption"] == "AES256"
