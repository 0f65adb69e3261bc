"""Scenario 13: the `orchestrator` CLI against a real server: send, runs list/show/cancel, errors."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import OrchestratorProcess, StateDir, base_env, seed
from tests.support.runs import wait_for_run, wait_for_status, wait_for_step


def cli(
    orchestrator: OrchestratorProcess, *args: str, target: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs `python -m orchestrator ARGS --target <server>` and returns the finished process."""
    command = [sys.executable, "-m", "orchestrator", *args]
    if target:
        command += ["--target", orchestrator.target]
    return subprocess.run(command, env=base_env(), capture_output=True, text=True, timeout=60, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result.stdout


def test_cli_send_list_show_cancel(
    orchestrator: OrchestratorProcess, client, start_app, state_dir: StateDir
) -> None:
    start_app("contacts")
    data = {"filename": "cli.csv", "user_id": 5, "upload_id": "u-13", "contacts": ["a@example.com"]}

    # send: prints the event id; --json for scripts; --id makes it idempotent.
    [event_id] = ok(cli(orchestrator, "send", seed.UPLOADED, "--data", json.dumps(data))).split()
    run = wait_for_run(client, event_id)
    wait_for_step(client, run.id, "wait-review", "waiting")
    fatal = json.dumps({"filename": "fatal.csv", "user_id": 5, "upload_id": "u-13f"})
    fixed = ok(cli(orchestrator, "send", seed.UPLOADED, "--id", "cli-fatal", "--json", "--data", fatal))
    assert json.loads(fixed) == {"ids": ["cli-fatal"]}
    failed = wait_for_status(client, wait_for_run(client, "cli-fatal").id, "failed")

    # runs list --json: filters by event, function and status.
    listed = json.loads(ok(cli(orchestrator, "runs", "list", "--event", event_id, "--json")))
    assert [(r["id"], r["function_id"], r["status"], r["event_id"]) for r in listed] == [
        (run.id, seed.FUNCTION_ID, "running", event_id)
    ]
    by_function = json.loads(ok(cli(orchestrator, "runs", "list", "--function", seed.FUNCTION_ID, "--json")))
    assert {r["id"] for r in by_function} == {run.id, failed.id}
    by_status = json.loads(ok(cli(orchestrator, "runs", "list", "--status", "failed", "--json")))
    assert [r["id"] for r in by_status] == [failed.id]

    # runs list: a table for people, newest first.
    table = ok(cli(orchestrator, "runs", "list")).splitlines()
    assert table[0].split() == ["ID", "FUNCTION", "STATUS", "CREATED", "DURATION"]
    assert [line.split()[:3] for line in table[1:]] == [
        [failed.id, seed.FUNCTION_ID, "failed"],
        [run.id, seed.FUNCTION_ID, "running"],
    ]

    # runs show: header and step table (status, attempts, duration, error).
    shown = ok(cli(orchestrator, "runs", "show", run.id))
    header = _header(shown)
    assert header["run"] == run.id and header["status"] == "running"
    assert header["function"] == f"{seed.APP_ID}/{seed.FUNCTION_ID}" and header["event"].startswith(event_id)
    steps = _step_rows(shown)
    assert [(s[0], s[1], s[2], s[3]) for s in steps] == [
        ("validate-upload", "run", "completed", "1"),
        ("enrich", "run", "completed", "1"),
        ("wait-review", "wait_for_event", "waiting", steps[2][3]),
    ]
    shown_failed = ok(cli(orchestrator, "runs", "show", failed.id))
    assert _header(shown_failed)["status"] == "failed"
    assert _header(shown_failed)["error"].startswith("NonRetriableError: fatal.csv is corrupt")
    enrich_row = next(line for line in shown_failed.splitlines() if line.startswith("enrich "))
    assert (
        enrich_row.split()[1:4] == ["run", "failed", "1"]
        and "NonRetriableError: fatal.csv is corrupt" in enrich_row
    )
    as_json = json.loads(ok(cli(orchestrator, "runs", "show", run.id, "--json")))
    assert as_json["id"] == run.id and as_json["status"] == "running"
    assert [s["id"] for s in as_json["steps"]] == ["validate-upload", "enrich", "wait-review"]
    assert as_json["event"]["data"] == data

    # runs cancel: the run ends cancelled; cancelling again is refused.
    cancelled = json.loads(ok(cli(orchestrator, "runs", "cancel", run.id, "--json")))
    assert cancelled["status"] == "cancelled"
    again = cli(orchestrator, "runs", "cancel", run.id)
    assert again.returncode == 1 and again.stderr.startswith("error: FAILED_PRECONDITION: "), again.stderr

    # Errors: unknown run (exit 1, the server's code and message), bad --data (exit 2), bad flags (exit 2).
    unknown = cli(orchestrator, "runs", "show", run.id[:-1] + ("1" if run.id[-1] == "0" else "0"))
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: NOT_FOUND: "), unknown.stderr
    bad_json = cli(orchestrator, "send", seed.UPLOADED, "--data", "{not json")
    assert bad_json.returncode == 2 and "--data" in bad_json.stderr and "JSON" in bad_json.stderr
    not_object = cli(orchestrator, "send", seed.UPLOADED, "--data", "[1, 2]")
    assert not_object.returncode == 2 and "JSON object" in not_object.stderr
    bad_name = cli(orchestrator, "send", "bad name!", "--data", "{}")
    assert bad_name.returncode == 1 and bad_name.stderr.startswith("error: INVALID_ARGUMENT: ")
    assert "name" in bad_name.stderr
    assert cli(orchestrator, "runs", "list", "--status", "sleepy").returncode == 2
    assert cli(orchestrator, "runs", target=False).returncode == 2

    # The final state, through the SDK.
    final = client.get_run(run.id)
    assert final.status == "cancelled" and final.ended_at is not None
    assert [s.id for s in final.steps][:2] == ["validate-upload", "enrich"]
    assert client.get_run(failed.id).status == "failed"
    assert state_dir.count("validate_csv") == 2 and state_dir.count("delete_upload") == 0

    # serve drains and exits 0 on SIGTERM.
    assert orchestrator.terminate() == 0


def _step_rows(shown: str) -> list[list[str]]:
    lines = shown.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["STEP", "KIND"])
    return [line.split() for line in lines[header + 1 :] if line.strip()]


def _header(shown: str) -> dict[str, str]:
    """The `label: value` lines above the step table."""
    header = {}
    for line in shown.splitlines():
        if not line.strip():
            break
        label, _, value = line.partition(":")
        header[label] = value.strip()
    return header
