"""One run's state as its manifests tell it: each step's state and counts, and the run's
summary. One reader for status, the chain's summary line and whoever else asks."""

from ops.config import Config
from ops.errors import Refused
from ops.state.manifest import STEPS, Run
from ops.sys.paths import NotPlainFile


def step_state(run: Run, step: str) -> dict:
    ok, failed = run.ok_path(step), run.failed_path(step)
    if ok.exists():
        try:
            doc = run.sealed(step)
        except Refused as exc:
            return {"state": "damaged", "error": exc.message}
        except NotPlainFile as exc:
            return {"state": "damaged", "error": f"{ok.name} {exc.strerror}"}
        except OSError as exc:
            return {"state": "damaged", "error": f"{ok.name}: {exc.strerror}"}
        paced = {"pace": doc.get("pace"), "throttled_s": doc.get("throttled_s", 0)}
        return {"state": "ok", "finished_at": doc.get("finished_at"), **paced, **_counts(step, doc)}
    if failed.exists():
        doc = run.failure(step)
        return {"state": "failed", "error": doc.get("error", "?"), "exit_code": doc.get("exit_code")}
    if run.paused_path(step).exists():
        doc = run.failure(step, run.paused_path(step))
        return {"state": "paused", "reason": doc.get("reason", "?"), "paused_at": doc.get("paused_at")}
    return {"state": "not run"}


def _counts(step: str, doc: dict) -> dict:
    if step == "scan":
        ps = doc.get("policies", {}).values()
        return {
            "files": sum(p.get("expired", 0) for p in ps),
            "bytes": sum(p.get("expired_bytes", 0) for p in ps),
            "undeletable": {n: p.get("undeletable", 0) for n, p in doc.get("policies", {}).items()},
            "braked": {n: p["braked"] for n, p in doc.get("policies", {}).items() if p.get("braked")},
            "writers_hidden": doc.get("writers_hidden", 0),
        }
    if step == "backup":
        ps = doc.get("policies", {}).values()
        return {
            "files": sum(p.get("archived", 0) for p in ps),
            "bytes": sum(p.get("member_bytes", 0) for p in ps),
            "destinations": doc.get("destinations", []),
            "failed_destinations": doc.get("failed_destinations", {}),
        }
    if step == "verify":
        return {"verified": doc.get("verified", []), "destinations": doc.get("destinations", {})}
    return {
        "files": doc.get("deleted", 0),
        "bytes": doc.get("deleted_bytes", 0),
        "kept": doc.get("kept", 0),
        "copies_missing": doc.get("copies_missing", {}),
    }


def summarize(config: Config, run_id: str) -> dict:
    """One run's figures from its manifests: what cron's one summary line says."""
    run = Run(config.state_dir, run_id)
    steps = {s: step_state(run, s) for s in STEPS}
    return {
        "expired": steps["scan"].get("files", 0),
        "archived": steps["backup"].get("files", 0),
        "archived_bytes": steps["backup"].get("bytes", 0),
        "verified_on": ",".join(steps["verify"].get("verified", [])) or "-",
        "deleted": steps["clean"].get("files", 0),
        "freed_bytes": steps["clean"].get("bytes", 0),
        "kept": steps["clean"].get("kept", 0),
    }
