"""The seed workflow of issue #2 (contact-list import), as users write it, with test helpers.

The workflow function below is the issue's code with two test-only changes that keep its shape: the
target also comes from `$ORCHESTRATOR_TARGET` (each test runs its own orchestrator on a free port), and
the review timeout comes from the event data (`review_timeout_s`, default 7 days) so a test can let it
expire.

The helpers pick their behaviour from the event data and record every execution of their code as one
JSON line in `$E2E_STATE_DIR/<helper>.log` (tests count them). The filename decides:
- contains "invalid": validation fails;
- contains "flaky": enrich fails its first 2 executions (ConnectionError);
- contains "fatal": enrich raises NonRetriableError;
- contains "retry-after": enrich's first execution raises RetryAfterError(retry_after=RETRY_AFTER_S);
- contains "slow": enrich's first execution blocks for 10 minutes (a test kills the worker meanwhile).
This file is self-contained (only the SDK and the standard library) so the installed-package test can
run a copy of it outside the checkout.
"""
# ruff: noqa: E501  (the workflow keeps the issue's long lines)

import asyncio
import json
import os
import time
from datetime import timedelta
from pathlib import Path

from sdk_python import Client, Event, NonRetriableError, RetryAfterError, TriggerEvent  # noqa: F401

RETRY_AFTER_S = 3
FLAKY_FAILURES = 2


def _record(fn_name, **data):
    """Appends one line for this execution; returns the earlier executions of `fn_name` (decoded lines)."""
    state = Path(os.environ.get("E2E_STATE_DIR", "."))
    state.mkdir(parents=True, exist_ok=True)
    file = state / f"{fn_name}.log"
    lines = file.read_text().splitlines() if file.exists() else []
    previous = [json.loads(line) for line in lines if line.endswith("}")]
    with file.open("a") as out:
        out.write(json.dumps({"t": time.time(), "pid": os.getpid(), **data}) + "\n")
        out.flush()
        os.fsync(out.fileno())  # on disk before the step reports: the test may SIGKILL us right after
    return previous


def validate_csv(filename):
    _record("validate_csv", filename=filename)
    if "invalid" in filename:
        return {"is_valid": False, "errors": [f"{filename}: line 3: missing email"]}
    return {"is_valid": True, "errors": []}


def send_failed_email(user_id, errors):
    _record("send_failed_email", user_id=user_id, errors=errors)
    return {"sent_to": user_id, "errors": errors}


async def enrich_contacts(filename):
    # Executions for this file only, so uploads in the same state dir do not share a failure budget.
    previous = sum(1 for e in _record("enrich_contacts", filename=filename) if e["filename"] == filename)
    if "flaky" in filename and previous < FLAKY_FAILURES:
        raise ConnectionError(f"enrichment service unreachable (execution {previous + 1})")
    if "fatal" in filename:
        raise NonRetriableError(f"{filename} is corrupt")
    if "retry-after" in filename and previous == 0:
        raise RetryAfterError("enrichment rate limited", timedelta(seconds=RETRY_AFTER_S))
    if "slow" in filename and previous == 0:
        await asyncio.sleep(600)
    return {"enriched": filename}


def insert_contacts(upload, filters):
    contacts = [c for c in upload.get("contacts", []) if c not in filters]
    _record("insert_contacts", contacts=contacts)
    return len(contacts)


def delete_upload(filename):
    _record("delete_upload", filename=filename)
    return {"deleted": filename}


def send_success_email(user_id, added):
    _record("send_success_email", user_id=user_id, added=added)
    return {"sent_to": user_id, "added": added}


# --- the workflow, as in the issue -------------------------------------------------------------------

client = Client(app_id="crm", target=os.environ.get("ORCHESTRATOR_TARGET", "localhost:50051"))

@client.create_function(fn_id="contacts-import", trigger=TriggerEvent(event="api/contact_list.uploaded"), retries=4)
async def contacts_import(ctx):
    step = ctx.step
    v = await step.run("validate-upload", validate_csv, ctx.event.data["filename"])
    if not v["is_valid"]:
        return await step.run("notify-invalid", send_failed_email, ctx.event.data["user_id"], v["errors"])
    await step.run("enrich", enrich_contacts, ctx.event.data["filename"])   # flaky: retried alone
    reviewed = await step.wait_for_event("wait-review", event="api/contact_list.reviewed",
                                         timeout=timedelta(seconds=ctx.event.data.get("review_timeout_s", 7 * 24 * 3600)), match="data.upload_id")
    if reviewed is None or reviewed.data["is_approved"] is False:
        return await step.run("delete-upload", delete_upload, ctx.event.data["filename"])
    added = await step.run("create-contacts", insert_contacts, ctx.event.data, reviewed.data["filters"])
    await step.run("notify-success", send_success_email, ctx.event.data["user_id"], added)
    return {"imported": added}

if __name__ == "__main__":
    client.worker(functions=[contacts_import]).run()
