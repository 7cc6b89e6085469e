"""The fault campaign: "failure preserves data", proven by injecting failures.

Every trial builds a fresh sandbox (``tools.sandbox.Sandbox``, shared with the tests) with a
random dataset, injects one kind of fault into the real scripts, recovers by running
``scripts/maintenance.py`` again without faults, and then judges the result with
standard tools only (GNU tar, sha256sum) against what the trial wrote:

  * no loss: every file ever written is still there unchanged, or byte-identical in an
    archive that GNU tar extracts, ``sha256sum -c`` accepts and verify.ok.json vouches for;
  * nothing deleted twice, exactly the expected archives per run, no staging left behind
    for a run that completed its backup, the lock free;
  * nothing wrongly kept forever: after recovery (and at most two further clean runs)
    every expired, regular, readable, untouched file is gone.

Faults come in two prices. Expensive ones (a SIGKILL'd chain, a full tmpfs, a racing
writer, hostile trees, eight chains at once) run real chains. Cheap ones (a bit flip
checked by verify, an EIO at a given offset, an fsync failing at the n-th call, a verified
copy lost between verify and clean) run the real step scripts in a process forked from a
warm worker (``runner.fork_run``): the script file is executed as ``__main__`` exactly as
``python scripts/<step>.py`` would, in its own process that can really be SIGKILLed,
without paying interpreter start-up each time.

Storage faults: "disk full" is a real tmpfs mounted as the destination or as the state
dir (skipped, with the mount error, where mount is not permitted); EIO on read, EIO on
fsync and short writes come from the fault-injecting subclass of the real local
destination in inject/faultdest.py. The table says which ran.

  cli.py       the command line (``scripts/chaos.py``, ``make chaos``)
  campaign.py  the trials planned from the seed and run by a pool of forked workers
  trials/      one module per family of fault kinds; ``KINDS`` and ``TRIALS``
  runner.py    the real scripts run for a trial (forked, or as cron starts them)
  dataset.py   a trial's random configuration and files
  oracle.py    the judge of a trial
  files.py     writing, reading and removing trees of any depth
  outcome.py   what a trial found
  report.py    the table, the notes, the failures
  inject/      the fault-injecting destination and the sitecustomize.py that installs it

tests/ops/chaos/test_chaos_slice.py runs a small seeded slice inside ``make test``.

Nothing here is imported at package import: inject/sitecustomize.py imports this package
in every process of a chain that has faults injected.
"""
