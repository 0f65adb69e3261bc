"""Durable state: one ``Store`` interface (``store.base``), a portable schema (``store.schema``), the
SQL implementation (``store.sql``) and the dialect specifics (``store.sqlite``, ``store.postgres``).
``store.factory.open_store(url)`` picks the dialect from the URL."""
