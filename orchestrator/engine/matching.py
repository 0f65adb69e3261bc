"""JSON handling and wait matching: canonical forms, event objects and match-path extraction.

A wait on ``match="data.upload_id"`` resumes with the first event whose value at that path equals
the triggering event's value at the same path. Both values are reduced to canonical JSON text so
the comparison is an equality on an indexed column: keys sorted, no whitespace, and integral floats
written as integers (``1.0`` equals ``1`` as it does in JavaScript and Python).
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

# The match value of a wait without a path: every event of the awaited name matches it. No
# canonical JSON text is empty, so it cannot collide with a real value.
ANY_VALUE: Final = ""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every parse: ``json.loads`` with an option builds a decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json(text: str) -> Any:
    """Parses strict JSON (no NaN or Infinity); raises ValueError."""
    if text.startswith("\ufeff"):  # as json.loads does: a BOM is not JSON
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _DECODER.decode(text)


def stored_json(value: Any) -> str:
    """The form in which step and run outputs (and event data) are stored and returned, from their
    parsed value: ``json.dumps``."""
    return json.dumps(value)


def normalize_output(text: str) -> str:
    """The form in which step and run outputs are stored and returned: ``json.dumps(json.loads(x))``."""
    return stored_json(parse_json(text))


def _normalize(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Canonical JSON text of a value: equal values give equal text."""
    return json.dumps(_normalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_object(event_id: str, name: str, data_json: str, ts_ms: int) -> dict[str, Any]:
    """The event as user code and match paths see it: ``{"id", "name", "data", "ts"}``."""
    return {"id": event_id, "name": name, "data": parse_json(data_json), "ts": ts_ms}


def event_output_json(event_id: str, name: str, data_json: str, ts_ms: int) -> str:
    """The output of a wait resumed by this event."""
    return json.dumps(event_object(event_id, name, data_json, ts_ms))


def is_valid_path(path: str) -> bool:
    """A dotted path of non-empty segments, e.g. ``data.upload_id`` (empty means "any event")."""
    return path == "" or all(segment != "" for segment in path.split("."))


def extract(obj: Any, path: str) -> Any:
    """The value at a dotted path, or MISSING. Digit segments index into lists."""
    current = obj
    for segment in path.split("."):
        if isinstance(current, dict) and segment in current:
            current = current[segment]
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        else:
            return MISSING
    return current


def match_value(event: dict[str, Any], path: str) -> str | None:
    """The indexed match value of an event for a path: ANY_VALUE for no path, canonical JSON of the
    value at the path, or None when the event has no value there (such a wait matches nothing)."""
    if path == "":
        return ANY_VALUE
    value = extract(event, path)
    if value is MISSING:
        return None
    return canonical_json(value)
