"""Limits that keep one run or one request from exhausting the orchestrator.

The constants are the fixed bounds; ``Limits`` holds the ones an operator may change (settings, flags),
with their defaults. Breaking a size or count limit is RESOURCE_EXHAUSTED, a malformed value is
INVALID_ARGUMENT; either way the message names the field and the limit.
"""

from dataclasses import dataclass
from typing import Final

KIB: Final = 1024
MIB: Final = 1024 * KIB

MAX_STEPS_PER_RUN: Final = 10_000
MAX_JSON_BYTES: Final = 4 * MIB  # per step output / run output
MAX_EVENT_BYTES: Final = 256 * KIB  # per event: name, id and data
MAX_EVENTS_PER_REQUEST: Final = 1_000
MAX_FUNCTIONS_PER_REQUEST: Final = 1_000
MAX_TRIGGERS_PER_FUNCTION: Final = 100
MAX_POLL_ITEMS: Final = 100
MAX_POLL_WAIT_MS: Final = 60_000
MAX_LIST_LIMIT: Final = 1_000
DEFAULT_LIST_LIMIT: Final = 100
DEFAULT_RETRIES: Final = 4
MAX_RETRIES: Final = 100
MAX_NAME_CHARS: Final = 256
MAX_ID_CHARS: Final = 128
MAX_STEP_ID_CHARS: Final = 256
MAX_ERROR_TEXT_CHARS: Final = 64 * KIB  # error name/message/stack are truncated beyond this
# How far back a new wait scans the awaited name's events after the run's mark (bounded work).
MAX_WAIT_BACKLOG_SCAN: Final = 10_000
# Room for a request's envelope around its largest payload (ids, names, error texts).
ENVELOPE_BYTES: Final = 1 * MIB
# The largest gRPC message the server accepts by default: a full batch of small events or one maximal
# output fits; a batch of many maximal events must be split (the status says so).
DEFAULT_MAX_MESSAGE_BYTES: Final = 16 * MIB


@dataclass(frozen=True)
class Limits:
    """The operator-tunable limits (``Settings.limits``)."""

    max_event_bytes: int = MAX_EVENT_BYTES
    max_batch_events: int = MAX_EVENTS_PER_REQUEST
    max_output_bytes: int = MAX_JSON_BYTES
    max_steps_per_run: int = MAX_STEPS_PER_RUN
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    def problems(self) -> list[str]:
        """What is wrong with these values (empty when they are usable)."""
        found = [
            f"{name}: must be positive, got {value}"
            for name, value in vars(self).items()
            if not isinstance(value, int) or value <= 0
        ]
        largest = max(self.max_output_bytes, self.max_event_bytes)
        if not found and self.max_message_bytes < largest + ENVELOPE_BYTES:
            found.append(
                "max_message_bytes: must exceed max_output_bytes and max_event_bytes by at least "
                f"{ENVELOPE_BYTES // MIB} MiB, got {self.max_message_bytes}"
            )
        return found


DEFAULT_LIMITS: Final = Limits()


def describe_bytes(n: int) -> str:
    """``262144`` -> ``"256 KiB"``: limits in messages read like the documentation."""
    if n % MIB == 0:
        return f"{n // MIB} MiB"
    if n % KIB == 0:
        return f"{n // KIB} KiB"
    return f"{n} bytes"
