"""Test databases: a fresh PostgreSQL database per test, cloned from a migrated template.

`ORCHESTRATOR_TEST_POSTGRES_URL` names a server and a database we may connect to for administration
(`postgresql+psycopg://postgres@127.0.0.1:5432/test` in CI, see `.ci/run`). Without it, the local default
server is tried. When no server answers, PostgreSQL tests are skipped saying why, except under `CI=true`,
where they fail: CI must never pass without having run them.

Isolation: `CREATE DATABASE t_... TEMPLATE <template>` copies an already migrated database in a few tens
of ms, and a database (unlike a schema) also isolates LISTEN/NOTIFY channels and advisory locks.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Final

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

POSTGRES_ENV: Final = "ORCHESTRATOR_TEST_POSTGRES_URL"
LOCAL_DEFAULT: Final = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# Prefix of every database the tests create; a crashed run's leftovers are recognisable and dropped.
PREFIX: Final = "durable_t_"
# Migrated databases cloned ahead of the tests that will use them.
PREFETCH: Final = 3


def _normalize(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database of the same server."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


class PostgresServer:
    """The PostgreSQL server the tests use, its migrated template, and per-test databases."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._admin: Engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_size=1)
        self._template: str | None = None
        self._template_lock = threading.Lock()
        self._lock = threading.Lock()
        self._prefetch = ThreadPoolExecutor(max_workers=PREFETCH + 1, thread_name_prefix="pg-prefetch")
        self._next: collections.deque[Future[str]] = collections.deque()
        # Templates made by ``create_database_from``, by key.
        self._built: dict[str, str] = {}

    def execute(self, sql: str) -> None:
        """Runs one administrative statement (CREATE/DROP DATABASE cannot run in a transaction)."""
        with self._admin.connect() as conn:
            conn.execute(text(sql))

    def create_database(self, *, migrated: bool = True) -> str:
        """A new database (migrated to head, or empty); returns its URL.

        Cloning takes a few hundred ms (the clone's WAL is flushed at commit), so the next
        ``PREFETCH`` migrated databases are cloned in the background while tests run: clones made
        together share their flushes, and a short test rarely waits for one."""
        if not migrated:
            return self._clone("template0")
        template = self._migrated_template()
        with self._lock:
            while len(self._next) <= PREFETCH:
                self._next.append(self._prefetch.submit(self._clone, template))
            ready = self._next.popleft()
        return ready.result()

    def create_database_from(self, key: str, build: Callable[[str], None]) -> str:
        """A new database cloned from a template made once per session: a migrated database that
        ``build(url)`` filled (it must close every connection it opened). For fixtures whose data
        takes seconds to make and that tests read without changing what the next one sees."""
        with self._template_lock:
            name = self._built.get(key)
            if name is None:
                url = self._clone(self._migrated_template_locked())
                name = make_url(url).database
                assert name is not None
                self._built[key] = name
                try:
                    build(url)
                except BaseException:
                    del self._built[key]
                    self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    raise
        return self._clone(name)

    def _clone(self, template: str) -> str:
        name = f"{PREFIX}{uuid.uuid4().hex[:16]}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        """Drops a database made by `create_database` (in the background: the test is done with it),
        closing any connection a process left open."""
        name = make_url(url).database
        assert name is not None and name.startswith(PREFIX), name
        self._prefetch.submit(self.execute, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _migrated_template(self) -> str:
        with self._template_lock:
            return self._migrated_template_locked()

    def _migrated_template_locked(self) -> str:
        if self._template is None:
            self._template = self._make_template()
        return self._template

    def _make_template(self) -> str:
        from orchestrator.store import factory

        name = f"{PREFIX}tpl_{os.getpid()}"
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        store = factory.open_store(with_database(self.admin_url, name))
        store.close()  # a template must have no connections when it is cloned
        return name

    def close(self) -> None:
        """Drops the prefetched database and the template, and closes the admin connection."""
        for pending in self._next:
            if pending.exception() is None:
                self.drop_database(pending.result())
        self._prefetch.shutdown(wait=True)
        for built in self._built.values():
            self.execute(f'DROP DATABASE IF EXISTS "{built}" WITH (FORCE)')
        if self._template is not None:
            self.execute(f'DROP DATABASE IF EXISTS "{self._template}" WITH (FORCE)')
        self._admin.dispose()


def connect_server() -> PostgresServer:
    """The test PostgreSQL server; skips (or fails under CI=true) when none answers."""
    configured = os.environ.get(POSTGRES_ENV)
    url = _normalize(configured or LOCAL_DEFAULT)
    server = PostgresServer(url)
    try:
        server.execute("SELECT 1")
    except OperationalError as exc:
        server.close()
        why = f"PostgreSQL at {make_url(url).render_as_string(hide_password=True)} is unreachable: {exc.orig}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{why} (CI=true: PostgreSQL tests must run; start it, see .ci/run)", pytrace=False)
        hint = "" if configured else f" ({POSTGRES_ENV} is unset, so the local default was tried)"
        pytest.skip(f"{why}{hint}")
    return server


PG_BIN: Final = Path("/usr/lib/postgresql/15/bin")


class ThrowawayPostgres:
    """A private PostgreSQL server in a temporary directory, for tests that stop or restart it.

    `initdb` refuses to run as root, so as root the server runs as the `postgres` user (`runuser`).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="durable-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"

    @property
    def url(self) -> str:
        """The admin URL (database `postgres`)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    def init(self) -> ThrowawayPostgres:
        """Creates the cluster (fsync off: this data is thrown away) and starts the server."""
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.dir.chmod(0o755)
        self._as_owner(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        return self.start()

    def start(self) -> ThrowawayPostgres:
        """Starts the server and waits until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._as_owner(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stops the server (`immediate`: like a crash, recovery at the next start)."""
        self._as_owner(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        """Stops the server if it runs and removes its files."""
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
