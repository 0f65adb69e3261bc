"""Alembic migrations of the orchestrator's schema, shipped inside the package (no alembic.ini: the
configuration is built in code by ``orchestrator.store.migrate``). One revision per schema change, each
portable across SQLite and PostgreSQL; ``versions/`` holds them in order (0001, 0002, ...)."""
