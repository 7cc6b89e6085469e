import time, os
from tests.ops.e2e.test_s3_destination import use_s3, moto, bucket, CuttingProxy, PART_SIZE
def test_mid(sandbox, bucket):
    proxy = CuttingProxy(bucket.server.port, cut_after=PART_SIZE // 2)
    use_s3(sandbox, bucket, endpoint=proxy.url)
    sandbox.file("big.log", os.urandom(PART_SIZE + (1 << 20)))
    t=time.monotonic()
    r = sandbox.run("maintenance", env=bucket.env)
    print("took", time.monotonic()-t, r.returncode)
    for p in sandbox.logs.glob("*"):
        print(p.read_text())
def test_off(sandbox, bucket, moto):
    use_s3(sandbox, bucket)
    sandbox.file("a.log", "x")
    moto.stop()
    t=time.monotonic()
    r = sandbox.run("maintenance", env=bucket.env)
    print("took", time.monotonic()-t, r.returncode)
    for p in sandbox.logs.glob("*"):
        print(p.read_text())
    t=time.monotonic()
    moto.start()
    print("start took", time.monotonic()-t)
