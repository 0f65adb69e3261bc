"""Migration revisions (a package so that setuptools ships them; Alembic skips this file)."""
