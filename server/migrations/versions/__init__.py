"""Alembic revisions of the registry database."""
