"""QTS Ops: backup-first retention for an unattended trading host.

The packages form layers; each imports only from the layers before it in LAYERS (and
from itself), never from one after it. tests/ops/decision/test_import_layers.py checks
every import of every module against this list.
"""

LAYERS = (
    "ops.errors",  # the exit-code table and the exceptions that carry it
    "ops.sys",  # no-follow paths, atomic writes, JSON lines, hashing I/O, workers, children
    "ops.config",  # retention.yaml: its fields, globs and validation
    "ops.console",  # human output: rich on a terminal, plain under cron
    "ops.archive",  # tar format, codecs, checksum files
    "ops.state",  # run ids and sealed manifests, the lock, the catalogue, restored files
    "ops.destinations",  # local and S3 behind one interface; whose runs they hold
    "ops.logs",  # the step log, metrics, the failure hook
    "ops.maintenance.step",  # a declared step: lock, chain check, manifest, failure record
    "ops.maintenance.retention",  # rules, walk, scan, plan
    "ops.maintenance.backup",  # backup and verify
    "ops.maintenance.cleanup",  # clean, compaction
    "ops.maintenance.chain",  # the four steps in order under one lock
    "ops.restore",  # restore and find
    "ops.reports",  # status
    "ops.demo",  # the sandbox demo
    "ops.cli",  # the scripts' shared shell
)
