"""Fixtures: a real Mosquitto and a real influxd per test, on free ports in tmp_path."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.services import Influxd, Mosquitto
from tests.support import reap_children


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """Kill child processes a test left running (after a failure)."""
    yield
    reap_children()


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
