"""scrub: every copy re-read once a cycle, and a copy that rotted or went missing repaired
from another that still verifies.

Once clean has deleted a file, the copies are all that is left, and nothing reads them
again until the day a restore needs them. Scrub re-reads them as verify does (each
archive decompressed and every member hashed against the run's records, each checksum
file to the byte) and keeps, in ``<state_dir>/scrub.json``, when each run was last
checked on each destination and what was found. Each scrub takes the runs whose last
check is oldest, as many as the cycle's share of the time since the last scrub (so every
run is re-read at least once per ``scrub.cycle`` when maintenance runs nightly, and a
night grows by no more than that share); ALL=1 takes every one.

A run a destination held and lost, or whose copy fails the check, is copied back from a
destination whose copy passes, through a staging and published as backup publishes
(the damaged copy is moved aside, never deleted), then checked again. A run that no
destination holds intact any more is recorded as lost: scrub exits 1 naming it, the
metrics count it, and ``make find`` says its files have no intact copy left. A run only
some destinations ever held is not missing from the others: a destination is expected
to hold a run that backup published there (the run's local state, the catalogue) or
that a scrub once found there.
"""

import calendar
import json
import math
import os
import time
from itertools import zip_longest

from ops.archive import ArchiveError, ArchiveReader
from ops.config import Config
from ops.console import Console
from ops.destinations import DestinationError, open_destination
from ops.destinations.hosts import known_runs
from ops.errors import OutsideWindow, Refused, StepFailed
from ops.logs import metrics
from ops.logs.steplog import StepLog
from ops.maintenance.backup.step import copy_run
from ops.restore.batch import Untrusted
from ops.restore.restore import Records, checked_sums, load_index
from ops.state import catalogue, scrubbed
from ops.state.lock import hold_lock
from ops.state.manifest import Run, list_runs
from ops.sys.window import WINDOW

DAY = 86400
_COPY_ERRORS = (Untrusted, ArchiveError, DestinationError, OSError, ValueError, KeyError, TypeError)


def check_copy(config: Config, dest, run_id: str) -> dict:
    """The run's copy on ``dest`` checked as verify checks it; its MANIFEST.json. Raises
    one of _COPY_ERRORS for a copy that is damaged, incomplete or not there. Every file the
    host's records hold of the run (its local state, else the catalogue: the files clean
    deleted) must be in it with its SHA-256, so a copy of another run renamed to this one's
    id fails, and so does one whose objects lack the lock or encryption asked for."""
    records = Records(config, run_id)
    manifest, listed = load_index(dest, run_id, records)
    names = ["MANIFEST.json", "SHA256SUMS"]
    for info in manifest["policies"].values():
        names += [info["archive"], info["sums"]]
    dest.check_objects(run_id, names)
    for name, known in records.files.items():
        if name not in manifest["policies"] and known:
            raise Untrusted(f"MANIFEST.json has no archive for policy {name!r}, which {records.source} records")
    for name, info in sorted(manifest["policies"].items()):
        known = records.files.get(name) or {}
        seen = set()
        with dest.open_read(run_id, info["archive"]) as raw, ArchiveReader(raw, info["compression"]) as reader:
            sums = checked_sums(dest, run_id, info["sums"], listed[info["sums"]])
            for member, line in zip_longest(reader.members(), sums):
                if member is None or line is None:
                    raise Untrusted(f"{info['archive']} and {info['sums']} list different members")
                if not member.is_regular or member.name != line[1]:
                    raise Untrusted(f"{info['archive']}: member {member.name!r} is not the one {info['sums']} lists")
                for _ in reader.chunks(member):
                    WINDOW.check()
                if member.sha256 != line[0] or known.get(member.name, line[0]) != line[0]:
                    raise Untrusted(f"{info['archive']}: {os.fsdecode(member.name)!r} does not match its SHA-256")
                seen.add(member.name)
            missing = set(known) - seen
            if missing:
                raise Untrusted(
                    f"{info['archive']} lacks {len(missing)} file(s) {records.source} records, "
                    f"e.g. {os.fsdecode(min(missing))!r}"
                )
            if reader.finish()[0] != info["archive_sha256"]:
                raise Untrusted(f"{info['archive']} does not match SHA256SUMS")
    return manifest


def _expected(config: Config, names: list[str], checked: dict, ours: set[str]) -> dict[str, set[str]]:
    """The runs each destination should hold: published there by backup (the local state,
    else the catalogue's record of where the copies were), or found there by a scrub before
    (of this host's runs only: ``ours``)."""
    expected = {n: set(checked.get(n, {})) & ours for n in names}
    for run_id in list_runs(config.state_dir):
        body = Run(config.state_dir, run_id).peek("backup") or {}
        for n in body.get("destinations", []):
            if n in expected:
                expected[n].add(run_id)
    for run_id in ours:  # where clean found the copies, as the first line of the run's block says
        try:
            first = next(catalogue.run_entries(config.state_dir, run_id), None)
        except StepFailed:  # a damaged block: find says so; here it only adds no expectation
            first = None
        for n in first.get("destinations", []) if isinstance(first, dict) else []:
            if n in expected:
                expected[n].add(run_id)
    return expected


def _slice(pairs: list[tuple[str, str]], checked: dict, last: float | None, now: float, cycle: int, all_: bool):
    """The (destination, run) pairs due: the oldest-checked first, as many as the cycle's
    share of the time since the last scrub (at least a day's), or every one."""
    order = sorted(pairs, key=lambda p: (checked.get(p[0], {}).get(p[1], {}).get("at", 0), p))
    if all_ or cycle <= 0:  # a cycle of 0s: every copy, every time
        return order
    elapsed = max(now - last, DAY) if last else DAY
    share = math.ceil(len(order) * min(1.0, elapsed / cycle))
    return order[:share]


def scrub(config: Config, ui: Console, dest_name: str | None = None, all_: bool = False, quiet: bool = False) -> int:
    """``quiet``: at the end of maintenance, which has said its own line; only a damaged copy
    or a destination that cannot be listed is said then (the second already by backup, so
    only on a terminal)."""
    if dest_name is not None:
        config.destination(dest_name)  # a name not configured: exit 78, as everywhere
    log = StepLog(config.log_dir, "scrub")
    ui.log_path = log.path
    try:
        WINDOW.require()
    except OutsideWindow as exc:
        log.event("outside_window", f"scrub: {exc.message}; nothing done")
        log.close()
        ui.info(f"scrub: {exc.message}; nothing done")
        return 0
    try:
        with hold_lock(config.state_dir, {"step": "scrub"}):
            return _scrub(config, ui, log, dest_name, all_, quiet)
    finally:
        log.close()


def _scrub(config: Config, ui: Console, log: StepLog, dest_name: str | None, all_: bool, quiet: bool) -> int:
    data = scrubbed.load(config.state_dir)
    checked = data.setdefault("checked", {})
    lost = data.setdefault("lost", {})
    names = [d.name for d in config.destinations]
    dests = {n: open_destination(config.destination(n)) for n in names}
    held: dict[str, set[str]] = {}
    for n, dest in dests.items():
        try:
            held[n] = set(dest.list_runs())
        except (DestinationError, OSError) as exc:
            log.event("destination_unreachable", f"{n}: {exc}", level="error", destination=n)
            (ui.warn if quiet else ui.problem)(f"scrub: destination {n} cannot list its runs: {exc}")
    # This host's runs, as its own state knows them (hosts.known_runs): a destination's word,
    # or the host's name, never makes a run ours; another host's runs there are left alone.
    ours = known_runs(config)
    for n in list(checked):
        checked[n] = {r: v for r, v in checked[n].items() if r in ours}
    for r in [r for r in lost if r not in ours]:
        del lost[r]
    expected = _expected(config, names, checked, ours)
    pairs = [
        (n, r)
        for n in names
        if n in held and (dest_name is None or n == dest_name)
        for r in sorted((held[n] & ours) | expected[n])
    ]
    now = time.time()
    due = _slice(pairs, checked, data.get("last"), now, config.scrub_cycle.seconds, all_)
    found: dict[str, dict[str, str | None]] = {}  # run -> dest -> None (intact) or what it lacks
    counts = {n: {"checked": 0, "damaged": 0, "repaired": 0, "unrepairable": 0} for n in names}
    try:
        for n, run_id in due:
            WINDOW.check()
            state, error = _check(config, dests[n], run_id, held[n])
            checked.setdefault(n, {})[run_id] = {"at": now, "state": state, "error": error}
            if state == "refused":  # the run's own state is damaged: said, and the others go on
                log.event("scrub_refused", f"run {run_id}: {error}", level="error", run=run_id)
                ui.problem(f"scrub: run {run_id} not checked: {error}")
                continue
            counts[n]["checked"] += 1
            found.setdefault(run_id, {})[n] = error
            if error:
                counts[n]["damaged"] += 1
                log.event("copy_damaged", f"run {run_id} on {n}: {error}", level="error", destination=n, run=run_id)
        unrepairable = {}
        for run_id, on in sorted(found.items()):
            for n in sorted(k for k, v in on.items() if v is not None):
                if _repair(config, dests, held, run_id, n, on, log, ui):
                    counts[n]["repaired"] += 1
                    checked[n][run_id] = {"at": time.time(), "state": "repaired", "error": None}
                    on[n] = None
                else:
                    counts[n]["unrepairable"] += 1
            if any(v is None for v in on.values()) or _intact_elsewhere(config, dests, held, run_id, on):
                lost.pop(run_id, None)
            else:
                unrepairable[run_id] = dict(on)
                lost[run_id] = {"at": time.time(), "destinations": dict(on)}
    except OutsideWindow as exc:
        log.event("outside_window", f"scrub paused: {exc.message}")
        ui.info(f"scrub: paused: {exc.message}")
        unrepairable = {}
    finally:
        data["last"] = now
        data["counts"] = counts
        scrubbed.save(config.state_dir, data)
    oldest = {n: now - min((_last_check(checked, n, r) for r in held[n]), default=now) for n in held}
    metrics.record_scrub(config, counts, oldest, len(lost), ok=not unrepairable)
    summary = {n: c for n, c in counts.items() if any(c.values())}
    log.event("scrubbed", f"{sum(c['checked'] for c in counts.values())} copies checked", counts=summary)
    said = "; ".join(
        f"{n}: {c['checked']} checked, {c['damaged']} damaged, {c['repaired']} repaired" for n, c in summary.items()
    )
    if any(c["damaged"] for c in counts.values()):
        ui.problem(f"scrub: {said}")  # a copy rotted or went missing: worth a mail from cron, repaired or not
    elif not quiet:
        ui.info(f"scrub: {said or 'nothing due'}")
    if unrepairable:
        said = "; ".join(
            f"run {r}: " + ", ".join(f"{n} {why}" for n, why in sorted(on.items())) for r, on in unrepairable.items()
        )
        raise StepFailed(
            f"no intact copy is left of {len(unrepairable)} run(s): {said}",
            hint="make find marks their files; look for another copy of those archives before anything else",
        )
    return 0


def _last_check(checked: dict, name: str, run_id: str) -> float:
    """When the run was last checked on the destination; never: when it was made (its id's time)."""
    at = checked.get(name, {}).get(run_id, {}).get("at")
    if at:
        return at
    try:
        return calendar.timegm(time.strptime(run_id[:16], "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return time.time()


def _check(config: Config, dest, run_id: str, held: set[str]) -> tuple[str, str | None]:
    """(state, what the copy lacks or None): ok, damaged, missing; refused (the run's own
    local state is damaged: the copy cannot be judged against it)."""
    if run_id not in held:
        return "missing", "does not hold the run any more"
    try:
        check_copy(config, dest, run_id)
    except Refused as exc:
        return "refused", exc.message
    except _COPY_ERRORS as exc:
        return "damaged", str(exc) or type(exc).__name__
    return "ok", None


def _intact_elsewhere(config, dests, held, run_id, on) -> bool:
    """Whether a destination not checked in this scrub holds an intact copy of the run."""
    for n, dest in dests.items():
        if n in on or run_id not in held.get(n, set()):
            continue
        if _check(config, dest, run_id, held[n]) == ("ok", None):
            return True
    return False


def _repair(config, dests, held, run_id: str, target: str, on: dict, log: StepLog, ui: Console) -> bool:
    """Copy the run onto ``target`` from a destination whose copy passes the check, then check
    it there; whether it now passes."""
    for n, source in dests.items():
        if n == target or run_id not in held.get(n, set()):
            continue
        known = on.get(n, "unchecked")  # None: found intact in this scrub; a string: what it lacks
        if known == "unchecked":
            state, known = _check(config, source, run_id, held[n])
            on[n] = known if state != "refused" else f"not checked: {known}"
            known = on[n]
        if known is not None:
            continue
        try:
            policies = json.loads(source.read_bytes(run_id, "MANIFEST.json"))["policies"]
            copy_run(run_id, source, dests[target].begin_repair(run_id), policies)
            held[target].add(run_id)
            error = _check(config, dests[target], run_id, held[target])[1]
        except _COPY_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            log.event("repaired", f"run {run_id} on {target} copied back from {n}", destination=target, source=n)
            return True
        log.event("repair_failed", f"run {run_id} on {target} from {n}: {error}", level="error", destination=target)
        ui.problem(f"scrub: repair of run {run_id} on {target} from {n} failed: {error}")
        on[target] = f"repair failed: {error}"
    return False
