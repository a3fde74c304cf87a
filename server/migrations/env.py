"""Alembic env: runs the registry migrations on the connection in `config.attributes`."""

from alembic import context
from sqlalchemy import Connection, create_engine

import server.cases.models  # noqa: F401  (registers the case tables)
from server.db.models import Base
from server.provisioning import models as _prov_models  # noqa: F401  (broker accounts, codes)
from server.scores import models as _score_models  # noqa: F401  (registers the score tables)

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    """Run the migrations on `connection`."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Use the caller's connection, or open one to `sqlalchemy.url`."""
    conn = config.attributes.get("connection")
    if conn is not None:
        _run(conn)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as own:
        _run(own)


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported")
run_migrations_online()
