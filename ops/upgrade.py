"""Upgrade of a hall server: check the new release against the data first, then migrate.

The order (deploy/hall/install.sh): the new release is installed beside the running one;
`check` validates the env files against the new settings and migrates a *copy* of the
registry (SQLite; PostgreSQL: inside a transaction that is rolled back); only when both
pass are the gateway and server stopped, the registry migrated for real, the `current`
link switched and the services restarted. A failure before the switch leaves the old
release running on unchanged data.
"""

import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from ops.layout import Layout, env_of

log = logging.getLogger(__name__)


class UpgradeError(Exception):
    """The new release cannot run on this installation's data or configs (nothing changed)."""


@dataclass(frozen=True)
class Revisions:
    """The registry's revision now and the newest the release knows."""

    current: str | None
    head: str


def head_revision() -> str:
    """The newest migration of this release."""
    from alembic.script import ScriptDirectory

    from server.db.engine import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise UpgradeError("this release has no migrations")
    return head


def current_revision(engine: Engine) -> str | None:
    """The registry's revision (None: an empty database)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Run with exactly these WR_ variables (the env files), restoring the environment after."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("WR_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(values)
    try:
        yield
    finally:
        for k in [k for k in os.environ if k.startswith("WR_")]:
            del os.environ[k]
        os.environ.update(saved)


def check_configs(layout: Layout) -> str:
    """Read each env file with the new release's settings; return the registry URL."""
    from pydantic import ValidationError

    from common.secret_files import SecretFileError
    from gateway.settings import GatewaySettings
    from server.scores.settings import ScoresSettings
    from server.settings import ServerSettings

    checks = {
        "server.env": (ServerSettings, ScoresSettings),
        "gateway.env": (GatewaySettings,),
    }
    url = ""
    for name, classes in checks.items():
        with _environment(env_of(layout, name)):
            for cls in classes:
                try:
                    settings = cls()
                except (ValidationError, SecretFileError, ValueError) as exc:
                    raise UpgradeError(
                        f"{layout.etc / name} does not suit the new release: {exc}\n"
                        f"{layout.etc / name} 与新版本不符：请按提示修改后重新运行安装脚本。"
                    ) from exc
                if isinstance(settings, ServerSettings):
                    url = settings.database_url
    return url


def trial_migration(url: str) -> Revisions:
    """Migrate a copy of the registry (or roll back on PostgreSQL); UpgradeError if it fails."""
    from server.db.engine import alembic_config, make_engine

    head = head_revision()
    parsed = make_url(url)
    engine = make_engine(url)
    try:
        revs = Revisions(current_revision(engine), head)
    finally:
        engine.dispose()
    if revs.current == head:
        return revs
    try:
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            _trial_sqlite(Path(parsed.database))
        else:
            from alembic import command

            engine = make_engine(url)
            try:
                with engine.connect() as conn:
                    trans = conn.begin()
                    cfg = alembic_config()
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                    trans.rollback()
            finally:
                engine.dispose()
    except Exception as exc:
        raise UpgradeError(
            f"the registry migration {revs.current} → {head} failed on a trial copy: "
            f"{exc.__class__.__name__}: {exc}"
        ) from exc
    return revs


def _trial_sqlite(path: Path) -> None:
    """Copy the SQLite registry (online backup) and migrate the copy."""
    from server.db.engine import Database

    with tempfile.TemporaryDirectory(prefix="wr-upgrade-") as tmp:
        copy = Path(tmp) / "registry.db"
        _sqlite_copy(path, copy)
        db = Database(f"sqlite:///{copy}")
        try:
            db.upgrade()
        finally:
            db.close()


def check(layout: Layout) -> Revisions:
    """Everything the new release needs from the data, checked without changing it."""
    url = check_configs(layout)
    return trial_migration(url)


def migrate(layout: Layout) -> Revisions:
    """Migrate the registry for real (the gateway and server are stopped).

    SQLite runs Alembic's DDL outside a transaction, so the file is copied first and put
    back if the migration fails; PostgreSQL rolls the migration's transaction back.
    """
    from server.db.engine import Database

    url = check_configs(layout)
    parsed = make_url(url)
    path = (
        Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None
    )
    db = Database(url)
    try:
        before = current_revision(db.engine)
    finally:
        db.close()
    saved = None
    if path is not None and path.exists() and before != head_revision():
        saved = path.with_name(f"{path.name}.before-upgrade-{before}")
        _sqlite_copy(path, saved)
    db = Database(url)
    try:
        db.upgrade()
        after = current_revision(db.engine)
    except Exception as exc:
        db.close()
        if saved is not None and path is not None:
            _sqlite_copy(saved, path)
        raise UpgradeError(
            f"the registry migration from {before} failed and was undone: "
            f"{exc.__class__.__name__}: {exc}"
        ) from exc
    finally:
        db.close()
    if after is None:
        raise UpgradeError("the registry has no revision after the migration")
    return Revisions(before, after)


def _sqlite_copy(src: Path, dst: Path) -> None:
    """Copy an SQLite database with the online backup API (dst replaced page by page)."""
    a = sqlite3.connect(src)
    b = sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


def remedy(layout: Layout, exc: Exception) -> str:
    """What the operator reads when the upgrade stopped."""
    return (
        f"UPGRADE STOPPED: {exc}\n"
        "Nothing was changed: the running release, its configs and its data are as they were, "
        f"and its services keep running ({layout.current} still points at the old release).\n"
        "What to do: keep this output, take a backup (windowrate backup --out DIR), and report "
        "the message above with the version you are upgrading to; fix the named config file "
        "if one is named and run deploy/hall/install.sh again.\n"
        "升级已停止：未做任何更改，旧版本仍在运行。请保留以上输出并备份后联系维护人员；"
        "若指出了配置文件，请修改后重新运行安装脚本。"
    )


def influx_init(url: str, database: str, retention: str) -> str:
    """Create the database and set its default retention policy; return what was done."""
    import httpx

    statements = (
        f'CREATE DATABASE "{database}"',
        f'ALTER RETENTION POLICY "autogen" ON "{database}" DURATION {retention} DEFAULT',
    )
    for q in statements:
        resp = httpx.post(f"{url.rstrip('/')}/query", data={"q": q}, timeout=30)
        if resp.status_code != 200 or '"error"' in resp.text:
            raise UpgradeError(f"InfluxDB refused {q!r}: {resp.status_code} {resp.text[:200]}")
    return f"InfluxDB database {database!r} ready (retention {retention})"
