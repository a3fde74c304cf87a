"""The extras fit the machines: a kiosk-only install has the terminal, not the server side.

A fresh venv (no system site-packages) gets `pip install '.[kiosk]'` from a copy of the
source tree (the repository is not written to; pip's cache makes the second run fast); the
terminal imports and its command runs, and none of the server's libraries are there.
"""

import shutil
import subprocess
import sys
import venv
from pathlib import Path

from tests.support import REPO

SERVER_ONLY = ("fastapi", "sqlalchemy", "psycopg", "uvicorn", "alembic", "openpyxl", "argon2")
SKIP = shutil.ignore_patterns(
    ".git", ".venv", "var", "node_modules", "build", "*.egg-info", "__pycache__", "*_cache",
    "docs", "tests",
)  # fmt: skip


def _run(*args: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run a command; the completed process (output kept for the assertion messages)."""
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_kiosk_extra_installs_the_terminal_without_the_server(tmp_path: Path) -> None:
    """`pip install '.[kiosk]'` in a fresh venv: kiosk and kiosk.core import, fastapi does not."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=SKIP)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False, system_site_packages=False)
    py = env_dir / "bin" / "python"
    # The test venv's pip installs into the fresh one (no ensurepip run); pip's cache is shared.
    pip = _run(
        sys.executable, "-m", "pip", "--python", py, "install", "-q",
        "--disable-pip-version-check", f"{source}[kiosk]",
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-3000:]
    ok = _run(py, "-c", "import kiosk.core.session, kiosk.settings, common, protocol; print('ok')")
    assert ok.stdout.strip() == "ok", ok.stderr[-3000:]
    for module in SERVER_ONLY:
        gone = _run(py, "-c", f"import {module}")
        assert gone.returncode != 0 and "ModuleNotFoundError" in gone.stderr, module
    cli = _run(env_dir / "bin" / "windowrate", "kiosk", "--help")
    assert cli.returncode == 0 and "provision" in cli.stdout, cli.stderr[-3000:]
