"""The `orchestrator` command line: run the server, send events, inspect and cancel runs.

    orchestrator serve [--host H] [--port P] [--db URL] [--lease-seconds S] [--no-migrate]
    orchestrator migrate [--db URL]
    orchestrator send NAME [--data JSON] [--id ID] [--target HOST:PORT] [--json]
    orchestrator runs list [--function F] [--status S] [--event EVENT_ID] [--target HOST:PORT] [--json]
    orchestrator runs show RUN_ID [--target HOST:PORT] [--json]
    orchestrator runs cancel RUN_ID [--target HOST:PORT] [--json]

`serve` also takes API keys (`--event-key/--worker-key/--admin-key KEY[,KEY]`, repeatable), TLS
(`--tls-cert PEM --tls-key PEM`) and limits (`--max-event-bytes N` ...). Client commands take
`--api-key KEY` and `--tls-ca PEM` (defaults `$ORCHESTRATOR_API_KEY`, `$ORCHESTRATOR_TLS_CA`).

Client commands talk to the orchestrator through the Python SDK (`sdk_python.Client`), exactly as user
code does. Exit codes: 0 success, 1 the orchestrator refused or could not be reached (the message is
printed as `error: CODE: message`), 2 usage errors (bad flags, `--data` that is not a JSON object).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from sdk_python._loops import EVENT_LOOPS

if TYPE_CHECKING:
    from sdk_python import Client

DEFAULT_TARGET = "localhost:50051"
TARGET_ENV = "ORCHESTRATOR_TARGET"
RUN_STATUSES = ("running", "completed", "failed", "cancelled")

EXIT_OK = 0
EXIT_CLIENT_ERROR = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A command line that parses but makes no sense (e.g. `--data` that is not a JSON object)."""


Handler = Callable[[argparse.Namespace], int]


def main(argv: list[str] | None = None) -> int:
    """Parses `argv` (default: `sys.argv[1:]`), runs the command and returns its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help (0) and on usage errors (2); return the code so `main` stays callable.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the whole command line, one subparser per command."""
    parser = argparse.ArgumentParser(prog="orchestrator", description="Durable workflow orchestrator.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the orchestrator (gRPC server)")
    serve.add_argument("--host", help="address to bind (default $ORCHESTRATOR_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default $ORCHESTRATOR_PORT or 50051)")
    serve.add_argument(
        "--db",
        help="SQLAlchemy URL (default $ORCHESTRATOR_DB, else a SQLite file in $ORCHESTRATOR_DATA_DIR"
        " or ./.orchestrator)",
    )
    serve.add_argument("--lease-seconds", type=float, help="how long work stays leased to a silent worker")
    serve.add_argument("--log-level", help="DEBUG, INFO, ... (default $ORCHESTRATOR_LOG_LEVEL or INFO)")
    serve.add_argument(
        "--loop",
        choices=EVENT_LOOPS,
        help="event loop: uvloop, asyncio's own, or auto (uvloop where installed; the default, or"
        " $ORCHESTRATOR_EVENT_LOOP)",
    )
    serve.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not apply schema migrations at start; refuse a database not already migrated",
    )
    _add_security_flags(serve)
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="apply the database schema migrations, then exit")
    migrate.add_argument("--db", help="SQLAlchemy URL (default: as for serve)")
    migrate.set_defaults(handler=_migrate)

    send = commands.add_parser("send", help="send an event")
    send.add_argument("name", help="event name, e.g. api/contact_list.uploaded")
    send.add_argument("--data", default="{}", help="the event's data, a JSON object (default {})")
    send.add_argument("--id", help="event id (makes the send idempotent); the SDK assigns one when omitted")
    _add_client_flags(send)
    send.set_defaults(handler=_send)

    runs = commands.add_parser("runs", help="inspect and cancel runs")
    runs_commands = runs.add_subparsers(dest="runs_command", metavar="COMMAND")
    runs.set_defaults(handler=lambda _args: _usage(runs))

    runs_list = runs_commands.add_parser("list", help="list runs, newest first")
    runs_list.add_argument("--function", help="only runs of this function id")
    runs_list.add_argument("--status", choices=RUN_STATUSES, help="only runs with this status")
    runs_list.add_argument("--event", help="only runs triggered by this event id")
    _add_client_flags(runs_list)
    runs_list.set_defaults(handler=_runs_list)

    runs_show = runs_commands.add_parser("show", help="one run and its steps")
    runs_show.add_argument("run_id")
    _add_client_flags(runs_show)
    runs_show.set_defaults(handler=_runs_show)

    runs_cancel = runs_commands.add_parser("cancel", help="cancel a run that has not ended")
    runs_cancel.add_argument("run_id")
    _add_client_flags(runs_cancel)
    runs_cancel.set_defaults(handler=_runs_cancel)
    return parser


_LIMIT_FLAGS = (
    "max_event_bytes",
    "max_batch_events",
    "max_output_bytes",
    "max_steps_per_run",
    "max_message_bytes",
)


def _add_security_flags(serve: argparse.ArgumentParser) -> None:
    for role, rights in (
        ("event", "SendEvent only"),
        ("worker", "register, poll, complete, and send events"),
        ("admin", "everything, also GetRun/ListRuns/CancelRun"),
    ):
        serve.add_argument(
            f"--{role}-key",
            action="append",
            metavar="KEY[,KEY]",
            help=f"API key(s) allowed {rights}; repeatable (default $ORCHESTRATOR_{role.upper()}_KEYS)."
            " With no key at all the server is open.",
        )
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    for name in _LIMIT_FLAGS:
        flag = name.replace("_", "-")
        serve.add_argument(f"--{flag}", type=int, help=f"limit (default $ORCHESTRATOR_{name.upper()})")


def _security_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from orchestrator import config

    overrides: dict[str, Any] = {
        f"{role}_keys": config.split_keys(getattr(args, f"{role}_key"))
        for role in ("event", "worker", "admin")
        if getattr(args, f"{role}_key")
    }
    overrides.update(tls_cert=args.tls_cert, tls_key=args.tls_key)
    overrides.update({name: getattr(args, name) for name in _LIMIT_FLAGS})
    return overrides


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", help=f"orchestrator address HOST:PORT (default ${TARGET_ENV} or {DEFAULT_TARGET})"
    )
    parser.add_argument("--api-key", help="API key sent as a bearer token (default $ORCHESTRATOR_API_KEY)")
    parser.add_argument(
        "--tls-ca", help="PEM file of the CA to trust: connect with TLS (default $ORCHESTRATOR_TLS_CA)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")


# --- serve -------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    # Imported here so client commands work without loading the server (and its database drivers).
    from orchestrator import config, server

    settings = config.Settings.from_env(
        host=args.host,
        port=args.port,
        db_url=args.db,
        lease_seconds=args.lease_seconds,
        log_level=args.log_level,
        event_loop=args.loop,
        migrate=False if args.no_migrate else None,
        **_security_overrides(args),
    )
    return server.run(settings)


def _migrate(args: argparse.Namespace) -> int:
    from orchestrator import config, errors
    from orchestrator.store import factory, migrate, sql

    try:
        settings = config.Settings.from_env(db_url=args.db)
        store = sql.SqlStore(settings.db_url, factory.dialect_for(settings.db_url))
        try:
            before, after = store.migrate()
        finally:
            store.close()
    except errors.OrchestratorError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_CLIENT_ERROR
    if before == after:
        print(f"database already at schema revision {after} (newest known: {migrate.head()})")
    else:
        print(f"database migrated from revision {before or '(empty)'} to {after}")
    return EXIT_OK


# --- client commands ---------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    from sdk_python import Client

    target = args.target or os.environ.get(TARGET_ENV) or DEFAULT_TARGET
    return Client(app_id="cli", target=target, api_key=args.api_key, tls_ca=args.tls_ca)


def _call_client(args: argparse.Namespace, call: Callable[[Client], Any]) -> tuple[int, Any]:
    """Runs one SDK call; a `ClientError` becomes `error: CODE: message` on stderr and exit code 1."""
    from sdk_python import ClientError

    try:
        result = call(_client(args))
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
    except ClientError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_CLIENT_ERROR, None
    return EXIT_OK, result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _send(args: argparse.Namespace) -> int:
    from sdk_python import Event

    data = _parse_data(args.data)
    event = Event(name=args.name, data=data, id=args.id)
    code, ids = _call_client(args, lambda client: client.send_sync(event))
    if code != EXIT_OK:
        return code
    if args.json:
        _print_json({"ids": list(ids)})
    else:
        for event_id in ids:
            print(event_id)
    return EXIT_OK


def _parse_data(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--data must be a JSON object, got {type(data).__name__}")
    return data


def _runs_list(args: argparse.Namespace) -> int:
    code, runs = _call_client(
        args,
        lambda client: client.list_runs(function_id=args.function, status=args.status, event_id=args.event),
    )
    if code != EXIT_OK:
        return code
    if args.json:
        _print_json([run_to_json(run) for run in runs])
        return EXIT_OK
    rows = [
        [
            run.id,
            run.function_id,
            run.status,
            _format_time(run.created_at),
            _duration(run.created_at, run.ended_at),
        ]
        for run in runs
    ]
    _print_table(["ID", "FUNCTION", "STATUS", "CREATED", "DURATION"], rows)
    return EXIT_OK


def _runs_show(args: argparse.Namespace) -> int:
    code, run = _call_client(args, lambda client: client.get_run(args.run_id))
    if code != EXIT_OK:
        return code
    _print_run(run, as_json=args.json)
    return EXIT_OK


def _runs_cancel(args: argparse.Namespace) -> int:
    code, run = _call_client(args, lambda client: client.cancel_run(args.run_id))
    if code != EXIT_OK:
        return code
    _print_run(run, as_json=args.json)
    return EXIT_OK


# --- output ------------------------------------------------------------------------------------------


def run_to_json(run: Any) -> dict[str, Any]:
    """A `sdk_python.Run` as a JSON-ready dict (timestamps as ISO 8601 UTC strings)."""
    fields: tuple[str, ...] = ("id", "app_id", "function_id", "event_id", "status", "output", "error")
    fields += ("created_at", "ended_at")
    result: dict[str, Any] = {name: _jsonable(getattr(run, name, None)) for name in fields}
    result["event"] = _jsonable(getattr(run, "event", None))
    result["steps"] = [_jsonable(step) for step in getattr(run, "steps", None) or []]
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _print_run(run: Any, *, as_json: bool, out: TextIO | None = None) -> None:
    from orchestrator import tracing

    stream = out or sys.stdout
    if as_json:
        _print_json(run_to_json(run), out=stream)
        return
    event = getattr(run, "event", None)
    event_name = getattr(event, "name", "") if event is not None else ""
    header = [
        ("run", run.id),
        ("function", f"{run.app_id}/{run.function_id}"),
        ("event", f"{run.event_id} ({event_name})" if event_name else run.event_id),
        ("status", run.status),
        ("created", _format_time(run.created_at)),
        ("ended", _format_time(run.ended_at)),
        ("duration", _duration(run.created_at, run.ended_at)),
        # Every run is one trace whose id derives from the run id: paste it into Jaeger's search.
        ("trace", f"{tracing.run_trace_id(run.id):032x}"),
    ]
    if run.status == "completed":
        header.append(("output", json.dumps(run.output)))
    if run.error is not None:
        header.append(("error", _format_error(run.error)))
    width = max(len(label) for label, _ in header)
    for label, value in header:
        print(f"{label + ':':<{width + 1}} {value}", file=stream)
    print(file=stream)
    rows = [row for step in run.steps for row in _step_rows(step)]
    if rows:
        _print_table(["STEP", "KIND", "STATUS", "ATTEMPTS", "DURATION", "DETAIL"], rows, out=stream)
    else:
        print("(no steps yet)", file=stream)


def _step_rows(step: Any) -> list[list[str]]:
    """A step's row, then one indented row per attempt when it took more than one, as a tree."""
    rows = [
        [
            step.id,
            step.kind,
            step.status,
            str(step.attempts),
            _duration(step.started_at, step.ended_at) if step.started_at is not None else "",
            _step_detail(step),
        ]
    ]
    history = list(getattr(step, "history", None) or [])
    if len(history) > 1 or any(a.failed for a in history):
        for index, attempt in enumerate(history):
            branch = "└─" if index == len(history) - 1 else "├─"
            outcome = "failed" if attempt.failed else "ok"
            rows.append(
                [
                    f"  {branch} attempt {attempt.attempt}",
                    "",
                    outcome,
                    "",
                    _duration(attempt.started_at, attempt.ended_at),
                    _format_error(attempt.error) if attempt.error is not None else "",
                ]
            )
    return rows


def _step_detail(step: Any) -> str:
    if step.kind == "sleep":
        return f"until {_format_time(step.wake_at)}"
    if step.kind == "wait_for_event":
        awaited = step.wait_event or "?"
        if step.wait_match:
            awaited += f" matching {step.wait_match}"
        if step.resumed_by_event_id:
            outcome = f"resumed by {step.resumed_by_event_id}"
        elif step.status == "completed":
            outcome = "timed out"
        else:
            outcome = "waiting"
        return f"{awaited}, deadline {_format_time(step.wake_at)}: {outcome}"
    return _format_error(step.error) if step.error is not None else ""


def _format_error(error: Any) -> str:
    message = " ".join(str(error.message).split())  # one line in a table cell
    return f"{error.name}: {message}" if message else str(error.name)


def _format_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(start: datetime | None, end: datetime | None) -> str:
    """Human duration from start to end, or to now (with a `+`) while still going."""
    if start is None:
        return "-"
    ongoing = end is None
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    text = _format_seconds(max(seconds, 0.0))
    return f"{text}+" if ongoing else text


def _format_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [list(headers), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=stream)


def _print_json(value: Any, out: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2, sort_keys=True), file=out or sys.stdout)
