"""Structured logs: one ``key=value`` line per thing that happened to a run.

``log(logger, "run.created", run_id=..., function_id=...)`` records an event name plus fields;
``configure(level)`` installs a formatter that renders every record as
``ts=2026-11-25T12:00:00.123Z level=info event=run.created run_id=... function_id=...``.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

_FIELDS_ATTR = "orchestrator_fields"


def log(logger: logging.Logger, what: str, /, **fields: Any) -> None:
    """Logs the event ``what`` at INFO with structured ``fields`` (rendered as key=value)."""
    log_at(logger, logging.INFO, what, **fields)


def log_at(logger: logging.Logger, level: int, what: str, /, **fields: Any) -> None:
    """Logs the event ``what`` at ``level`` with structured ``fields``."""
    if logger.isEnabledFor(level):
        logger.log(level, what, extra={_FIELDS_ATTR: fields})


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n\t'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return text


class KeyValueFormatter(logging.Formatter):
    """Renders records as ``key=value`` pairs, quoting values with spaces or quotes."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        parts = [f"ts={ts}", f"level={record.levelname.lower()}"]
        fields: dict[str, Any] | None = getattr(record, _FIELDS_ATTR, None)
        if fields is None:
            parts.append(f"logger={record.name}")
            parts.append(f"msg={_quote(record.getMessage())}")
        else:
            parts.append(f"event={_quote(record.msg)}")
            parts.extend(f"{k}={_quote(v)}" for k, v in fields.items() if v is not None)
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


def configure(level: str = "INFO") -> None:
    """Sends the orchestrator's logs to stderr as key=value lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("orchestrator")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
