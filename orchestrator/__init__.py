"""The durable workflow orchestrator server.

Layers, outermost first:

- ``orchestrator.api``: the gRPC servicer; validates requests and converts proto <-> domain.
- ``orchestrator.service``: the async facade: runs store calls off the event loop, long polls, wake-ups.
- ``orchestrator.scheduler``: durable timers (retry backoff, sleeps, wait timeouts, lease expiry).
- ``orchestrator.engine``: pure decisions (retries, backoff, transitions, match paths); no I/O.
- ``orchestrator.store``: one ``Store`` interface and its SQL implementation (SQLite, PostgreSQL).

Entry points: ``orchestrator.server.run`` (blocking) and ``orchestrator.server.serve`` (asyncio).
"""

# Before anything imports grpc: the orchestrator polls grpc the way the SDK does (sdk_python._transport).
from sdk_python import _transport  # noqa: F401

__version__ = "0.1.0"
