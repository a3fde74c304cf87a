"""Fixtures: a real Mosquitto and a real influxd per test, on free ports in tmp_path.

With `CI=true` a skipped test fails the run: the suite promises zero skips on a machine set
up by `./wr setup`, so a skip there means something is missing, not optional.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.postgres import PgCluster, postgres_bindir
from devstack.services import Influxd, Mosquitto
from tests.support import reap_children

SCREENSHOTS_ENV = "WR_SCREENSHOTS_DIR"
_skipped: list[str] = []


def _ci() -> bool:
    """True when running in CI (`CI=true`, as CI services set it)."""
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember every skipped test with its reason."""
    _remember_skip(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Remember a module skipped as a whole (importorskip, a module-level skip)."""
    _remember_skip(report)


def _remember_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Add a skipped report to the list."""
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI, turn a passing run with skipped tests into a failure."""
    if _ci() and _skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """In CI, list the skipped tests that failed the run."""
    if _ci() and _skipped:
        terminalreporter.section("skipped tests fail the run in CI (CI=true)", red=True)
        for line in _skipped:
            terminalreporter.line(line, red=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that saves screenshots, so `./wr screenshots` can select them."""
    for item in items:
        if "screenshot_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.screenshots)


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """Kill child processes a test left running (after a failure)."""
    yield
    reap_children()


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    """Where UI tests save screenshots: WR_SCREENSHOTS_DIR (`./wr screenshots`), else tmp."""
    where = os.environ.get(SCREENSHOTS_ENV)
    path = Path(where) if where else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh Mosquitto with persistence."""
    m = Mosquitto(tmp_path / "mosquitto")
    m.start()
    yield m
    m.stop()


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[Influxd]:
    """A fresh influxd."""
    i = Influxd(tmp_path / "influxd")
    i.start()
    yield i
    i.stop()


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    """A PostgreSQL cluster of the module's own (initdb in a temp dir, a free port)."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl not found: apt-get install postgresql")
    cluster = PgCluster(bindir)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()
