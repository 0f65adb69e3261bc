"""Reading the per-test state directory where test apps record each execution of their step code.

Test apps append one JSON line per execution to `<E2E_STATE_DIR>/<name>.log` (see `tests/e2e/apps/`),
so a test can count exactly how often a step's user code ran and when.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_DIR_ENV = "E2E_STATE_DIR"


@dataclass(frozen=True)
class Execution:
    """One recorded execution of a step function: when it started and what it was given."""

    name: str
    started: float  # Unix seconds (time.time()) when the user code started
    data: dict[str, Any]


class StateDir:
    """The executions recorded by the test apps of one test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def executions(self, name: str) -> list[Execution]:
        """Every recorded execution of `name`, in the order they were appended."""
        file = self.path / f"{name}.log"
        if not file.exists():
            return []
        result = []
        for line in file.read_text().splitlines():
            # A SIGKILLed writer may leave a partial last line; only whole lines are executions.
            if not line.endswith("}"):
                continue
            record = json.loads(line)
            result.append(Execution(name=name, started=float(record["t"]), data=record))
        return result

    def count(self, name: str) -> int:
        """How many times `name` ran."""
        return len(self.executions(name))

    def counts(self) -> dict[str, int]:
        """Executions per step function name, for assertion messages."""
        return {file.stem: self.count(file.stem) for file in sorted(self.path.glob("*.log"))}
