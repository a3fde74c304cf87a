"""Alembic environment of the registry database."""
