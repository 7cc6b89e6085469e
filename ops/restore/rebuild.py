"""catalogue-rebuild: the catalogue made again from the runs a destination holds.

A host that lost its state lost the only index of where each deleted file went. Every run
on a destination carries what is needed to find its files again: its MANIFEST.json (the
host, each policy's root and archive) and each policy's member list (``<policy>.sha256``),
checked against each other and against SHA256SUMS as restore checks them. Each run of
this host that the catalogue has no block for gets one, a line per member; what the
destination cannot say is marked so: the deletion time (``deleted_at`` null, shown as
unknown), the size and mtime. A block the catalogue has already is the better record and
is kept. Runs of other hosts sharing the destination are passed over (and counted).
"""

import os

from ops.archive import ArchiveError
from ops.config import Config
from ops.console import Console
from ops.destinations import DestinationError, open_destination
from ops.destinations.hosts import run_host, this_host
from ops.errors import StepFailed
from ops.logs.steplog import StepLog
from ops.restore.batch import Untrusted
from ops.restore.find import indexing
from ops.restore.restore import Records, checked_sums, load_index
from ops.state import catalogue, catindex


def rebuild(config: Config, dest_name: str | None, ui: Console) -> int:
    if not dest_name:
        raise StepFailed("which destination? pass DEST=<name>", hint="make status lists the destinations")
    dest = open_destination(config.destination(dest_name))
    log = StepLog(config.log_dir, "catalogue-rebuild")
    ui.log_path = log.path
    directory = catalogue.catalogue_dir(config.state_dir)
    added = kept = other = files = 0
    refused: dict[str, str] = {}
    try:
        try:
            runs = dest.list_runs()
        except (DestinationError, OSError) as exc:
            raise StepFailed(f"destination {dest.describe()} cannot list its runs: {exc}") from None
        me = this_host()
        for run_id in runs:
            if (directory / f"{run_id}.jsonl").exists():
                kept += 1
                continue
            try:
                manifest, listed = load_index(dest, run_id, Records(config, run_id))
                if run_host(manifest) != me:
                    other += 1
                    continue
                lines = list(_lines(dest, run_id, manifest, listed))
            except (Untrusted, ArchiveError, DestinationError, OSError, ValueError) as exc:
                refused[run_id] = str(exc)
                log.event("run_refused", f"run {run_id} on {dest.name}: {exc}", level="warning", run_rebuilt=run_id)
                continue
            files += catalogue.write_run(config.state_dir, run_id, lines)
            added += 1
            log.event("run_catalogued", f"run {run_id}: {len(lines)} files from {dest.name}", run_rebuilt=run_id)
        catindex.sync(directory, indexing(ui))
        msg = (
            f"catalogue rebuilt from {dest.describe()}: {added} runs ({files} files) added, {kept} already "
            f"catalogued and kept, {other} of other hosts passed over"
        )
        log.event("rebuilt", msg, added=added, files=files, kept=kept, other_hosts=other, refused=len(refused))
        ui.info(msg)
        if refused:
            said = "; ".join(f"{r}: {why}" for r, why in list(refused.items())[:5])
            raise StepFailed(
                f"{len(refused)} run(s) on {dest.name} could not be read and were not catalogued ({said})",
                hint="the runs that could be read are catalogued; inspect the others on the destination",
            )
        return 0
    finally:
        log.close()


def _lines(dest, run_id: str, manifest: dict, listed: dict):
    for policy, info in sorted(manifest["policies"].items()):
        root = info.get("root")
        if not isinstance(root, str) or not os.path.isabs(root):
            raise Untrusted(f"MANIFEST.json names no absolute root for policy {policy!r}")
        for sha, name in checked_sums(dest, run_id, info["sums"], listed[info["sums"]]):
            rel = os.fsdecode(name)
            yield {
                "path": os.path.join(root, rel),
                "policy": policy,
                "rel": rel,
                "run": run_id,
                "destinations": [dest.name],
                "archive": info["archive"],
                "sha256": sha,
                "size": None,
                "mtime_ns": None,
                "deleted_at": None,
                "rebuilt_from": dest.name,
            }
