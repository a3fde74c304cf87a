"""A throwaway PostgreSQL cluster (initdb + pg_ctl on a free port) for tests and benchmarks.

The server binaries are found through `pg_config --bindir`, then `initdb` on PATH, then the
newest `/usr/lib/postgresql/<version>/bin` (Debian keeps them off PATH); any version will do.
"""

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from devstack.services import free_port

PROGRAMS = ("initdb", "pg_ctl")


def _has_programs(directory: Path) -> bool:
    """True when `directory` holds initdb and pg_ctl."""
    return all((directory / p).is_file() and os.access(directory / p, os.X_OK) for p in PROGRAMS)


def _version_key(directory: Path) -> tuple[int, ...]:
    """Sort key of /usr/lib/postgresql/<version>/bin by version number."""
    return tuple(int(n) for n in re.findall(r"\d+", directory.parent.name)) or (0,)


def postgres_bindir() -> Path | None:
    """The directory of PostgreSQL's initdb and pg_ctl, or None when not installed."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates += debian
    return next((c for c in candidates if _has_programs(c)), None)


def _has_user(name: str) -> bool:
    """Return True if the system user `name` exists."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class PgCluster:
    """A throwaway PostgreSQL cluster made with initdb and run with pg_ctl on a free port."""

    def __init__(self, bindir: Path) -> None:
        """Choose a directory, a port and the user that runs the server (not root)."""
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="wr-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres" if _has_user("postgres") else "nobody"
            pw = pwd.getpwnam(self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)

    def _run(self, program: str, *args: str) -> None:
        """Run a PostgreSQL program as the cluster's user."""
        cmd = [str(self.bindir / program), *args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        """Create the cluster (trust auth, superuser `postgres`) and start it."""
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        opts = f"-p {self.port} -h 127.0.0.1 -k {self.data} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", opts, "-l",
            str(self.root / "server.log"), "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server and remove the cluster."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """Return the SQLAlchemy URL of `database`."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)
