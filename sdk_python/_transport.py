"""grpc's I/O engine for this process, chosen before grpc is first imported (importing this module
does it; ``sdk_python`` and ``orchestrator`` import it first thing).

grpcio 1.85 (our floor) runs Python on grpc's EventEngine by default: a socket is read on an
EventEngine thread, which hands what arrived to the thread that waits on the completion queue
(grpc.aio's poller), which hands it to the event loop. With the three ``event_engine_*``
experiments off, grpc polls with its older iomgr, as Python did until 2026: the poller thread reads
the socket itself, one thread hop less for every message received. On the bench's 2-core machine,
paired samples: event -> first step 0.1-0.6 ms sooner (SQLite 3.74 -> 3.48 ms, PostgreSQL
5.86 -> 5.50), throughput unchanged. The orchestrator gains on the way in (SendEvent, CompleteStep),
a worker on the way back (PollWork's reply).

Only a default: a ``GRPC_EXPERIMENTS`` already set is left alone (set it empty to keep grpc's own
defaults), and nothing is set once grpc is imported (it read the variable then; setting it later
would change only child processes). Where it is set, child processes inherit it, like the rest of
the environment.
"""

from __future__ import annotations

import os
import sys

ENV = "GRPC_EXPERIMENTS"
POLL_ON_COMPLETION_QUEUE = "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"


def choose_io_engine() -> None:
    """Turns the EventEngine experiments off for this process when nothing chose otherwise."""
    if ENV not in os.environ and "grpc" not in sys.modules:
        os.environ[ENV] = POLL_ON_COMPLETION_QUEUE


choose_io_engine()
