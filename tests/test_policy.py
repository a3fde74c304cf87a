"""The scoring policy is the one definition of negative and satisfied: board, cases, exports."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from common.mqtt import MqttSettings
from devstack.services import Influxd, Mosquitto
from protocol.messages import RatingEvent
from server.app import create_app
from server.cases.models import Case
from server.scores import settings as scores_settings
from server.scores.policy import Policy, active_policy
from server.settings import ServerSettings
from server.settings.cases import CaseSettings
from server.settings.live import LiveSettings
from storage.client import InfluxSettings
from storage.lineproto import rating_line
from tests.support import REPO, rating_doc, wait_until

TZ = "Asia/Shanghai"
HALL, WINDOW = "h-pol", "w1"
# Negative is the lowest level only; satisfied is 满意 (level 4 of five) or better.
STRICT = """
min_sample = 1
[scales]
negative = { "5" = [1], "4" = [1], "3" = [1] }
satisfied = { "5" = [4, 5], "4" = [3, 4], "3" = [3] }
"""


def _write(url: str, docs: list[dict[str, object]]) -> None:
    """Write ratings to influxd as the gateway does."""
    httpx.post(f"{url}/query", params={"q": 'CREATE DATABASE "windowrate"'}).raise_for_status()
    lines = [rating_line(RatingEvent.model_validate_json(json.dumps(d))) for d in docs]
    resp = httpx.post(f"{url}/write", params={"db": "windowrate"}, content="\n".join(lines))
    assert resp.status_code == 204, resp.text


@pytest.fixture
def strict_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """WR_SCORES_POLICY_FILE names the strict policy for this test."""
    path = tmp_path / "policy.toml"
    path.write_text(STRICT)
    monkeypatch.setenv("WR_SCORES_POLICY_FILE", str(path))
    scores_settings.get_settings.cache_clear()
    yield path
    scores_settings.get_settings.cache_clear()


def test_changed_policy_is_followed_by_board_cases_and_exports(
    strict_policy: Path, broker: Mosquitto, influx: Influxd, tmp_path: Path
) -> None:
    """With negative = lowest level only, board, cases and export count one negative, not two."""
    now_ms = int(time.time() * 1000)
    docs = [
        rating_doc(HALL, "k-1", seq, window=WINDOW, scale=5, level=level, ts=now_ms - 5000 + seq)
        for seq, level in enumerate((1, 2, 3, 4, 5), 1)
    ]
    _write(influx.url, docs)
    strict = active_policy()
    assert strict.negative_levels()[5] == [1]
    default = Policy()
    pairs = [(5, lv) for lv in (1, 2, 3, 4, 5)]
    assert sum(default.negative(*p) for p in pairs) == 2  # the data tells the two apart
    assert sum(default.satisfied(*p) for p in pairs) == 3

    cfg = ServerSettings(
        database_url=f"sqlite:///{tmp_path / 'wr.db'}",
        timezone=TZ,
        influx=InfluxSettings(url=influx.url),
        mqtt=MqttSettings(port=broker.port),
        gateway_metrics_urls=[],
        live=LiveSettings(resync_s=0.5),
        cases=CaseSettings(poll_s=0.2),
    )
    with TestClient(create_app(cfg)) as c:
        # Board: one negative (the level-1 rating), satisfied 2 of 5.
        def board_row() -> dict[str, object] | None:
            rows = c.get("/api/live/board").json()["rows"]
            return next((r for r in rows if r["window"] == WINDOW and r["ratings"] == 5), None)

        row = wait_until(board_row, 30, what="the board holds the five ratings")
        assert row["negatives"] == 1
        assert row["satisfaction_rate"] == pytest.approx(2 / 5)
        assert row["last_negative"]["id"] == docs[0]["id"]
        # Today's API agrees.
        (today,) = [w for w in c.get("/api/today").json()["windows"] if w["window"] == WINDOW]
        assert today["negatives"] == 1 and today["satisfaction_rate"] == pytest.approx(2 / 5)
        # Cases: only the level-1 rating opens one.
        poller = c.app.state.case_poller  # type: ignore[attr-defined]
        wait_until(lambda: poller.scans >= 3, 20, what="three scans")
        with c.app.state.db.session() as session:  # type: ignore[attr-defined]
            opened = set(session.scalars(select(Case.rating_id)))
        assert opened == {docs[0]["id"]}

    # Export (the CLI, policy from WR_SCORES_POLICY_FILE): the same numbers.
    day = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(TZ)).date().isoformat()
    out = tmp_path / "scores.json"
    env = dict(
        os.environ,
        WR_SERVER_DATABASE_URL=cfg.database_url,
        WR_SERVER_INFLUX__URL=influx.url,
        WR_SERVER_TIMEZONE=TZ,
        WR_LOG_LEVEL="WARNING",
    )
    cmd = [sys.executable, "-m", "windowrate", "export", "--from", day, "--to", day]
    cmd += ["--level", "window", "--out", str(out)]
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    (exported,) = [r for r in json.loads(out.read_text()) if r["key"] == WINDOW]
    assert exported["ratings"] == 5
    assert exported["negatives"] == 1 and exported["satisfied"] == 2
    assert exported["satisfaction_rate"] == pytest.approx(2 / 5)
