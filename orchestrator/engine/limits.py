"""Simple limits that keep one run or one request from exhausting the orchestrator."""

from typing import Final

MAX_STEPS_PER_RUN: Final = 10_000
MAX_JSON_BYTES: Final = 4 * 1024 * 1024  # per output, per event payload
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
MAX_ERROR_TEXT_CHARS: Final = 64 * 1024  # error name/message/stack are truncated beyond this
# How far back a new wait scans the awaited name's events after the run's mark (bounded work).
MAX_WAIT_BACKLOG_SCAN: Final = 10_000
