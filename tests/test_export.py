"""Exports of the crafted dataset: deterministic files, manifests, the CLI, the API and roles."""

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from common.mqtt import MqttSettings
from devstack.services import Influxd, Mosquitto, free_port
from server.app import create_app
from server.auth.service import create_user
from server.db.engine import Database
from server.scores import settings as scores_settings
from server.scores.export import header, manifest_path
from server.scores.periods import Period
from server.scores.policy import Policy
from server.scores.rollup import build_rollups
from server.scores.service import export_scores
from server.settings import ServerSettings
from server.settings.cases import CaseSettings
from storage.client import InfluxClient, InfluxSettings
from tests.support import REPO, wait_until
from tests.test_scores import DAY, TZ, World, add_cases, crafted, fill_registry, write_lines

PASSWORD = "correct horse battery"
JSON_KEYS = {
    "level",
    "key",
    "ratings",
    "levels",
    "satisfaction_rate",
    "score",
    "status",
    "excluded",
}


@pytest.fixture
def world(influx: Influxd, tmp_path: Path) -> Iterator[World]:
    """The crafted dataset of test_scores in a real influxd; registry and cases in SQLite."""
    ds = crafted()
    write_lines(influx.url, ds.lines())
    db = Database(f"sqlite:///{tmp_path / 'wr.db'}")
    db.upgrade()
    fill_registry(db)
    add_cases(db, ds)
    client = InfluxClient(InfluxSettings(url=influx.url))
    yield World(client, db, ds, influx.url)
    client.close()
    db.close()


def export(w: World, fmt: str, out: Path, policy: Policy | None = None) -> dict[str, Any]:
    """Export DAY at window level; return the manifest."""
    with w.db.session() as s:
        _r, manifest = export_scores(
            session=s, influx=w.influx, tz=TZ, policy=policy or Policy(),
            period=Period(DAY, DAY), level="window", fmt=fmt, out=out,
        )  # fmt: skip
    return manifest


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "json"])
def test_same_export_twice_is_byte_identical(world: World, tmp_path: Path, fmt: str) -> None:
    """Same data and policy ⇒ same bytes; the manifest has the checksum and the policy hash."""
    first, second = tmp_path / f"one.{fmt}", tmp_path / f"two.{fmt}"
    m1 = export(world, fmt, first)
    time.sleep(1.1)  # a different generation time must not change the data file
    m2 = export(world, fmt, second)
    data = first.read_bytes()
    assert data == second.read_bytes()
    assert m1["sha256"] == m2["sha256"] == hashlib.sha256(data).hexdigest()
    on_disk = json.loads(manifest_path(first).read_text())
    assert on_disk == m1 and on_disk["rows"] == 5 and on_disk["bytes"] == len(data)
    assert on_disk["period"] == {
        "from": "2026-03-02", "to": "2026-03-02", "to_inclusive": True, "timezone": TZ.key,
    }  # fmt: skip
    assert on_disk["policy"]["hash"] == Policy().hash and on_disk["policy"]["rules"]["min_sample"]
    assert on_disk["exclusions"]["appeal"] == 1 and len(on_disk["excluded_ratings"]) == 1
    if fmt == "csv":
        assert data.startswith(b"\xef\xbb\xbf")
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
        assert rows[0] == header("zh") and rows[0][5] == "有效评价数(ratings)"
        a1 = dict(zip(rows[0], rows[2], strict=True))
        assert (a1["编码(key)"], a1["得分(score)"], a1["满意率(satisfaction_rate)"]) == (
            "a1", "77.44", "0.878",  # the same-ticket rating is not reviewed here: 3175/41
        )  # fmt: skip
        assert a1["剔除原因(exclusions)"] == "test_device:3;repeat:2;paused:1;appeal:1"
    elif fmt == "json":
        rows = json.loads(data)
        assert all(set(r) >= JSON_KEYS for r in rows)
        a2 = next(r for r in rows if r["key"] == "a2")
        assert (a2["status"], a2["score"], a2["levels"]["3"]) == ("insufficient_sample", None, 10)
    else:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            sheet = z.read("xl/worksheets/sheet1.xml").decode()
            strings = z.read("xl/sharedStrings.xml").decode()
            listed = z.read("xl/worksheets/sheet3.xml").decode()
        assert 'ySplit="1"' in sheet and 'state="frozen"' in sheet and "autoFilter" in sheet
        assert "有效评价数(ratings)" in strings and Policy().hash in strings
        assert world.ds.ids["appeal"] in strings and listed.count("<row ") == 2


def test_policy_change_changes_hash_and_data(world: World, tmp_path: Path) -> None:
    """A changed rule gives another hash, in the manifest and in the numbers."""
    m1 = export(world, "json", tmp_path / "a.json")
    m2 = export(world, "json", tmp_path / "b.json", Policy(min_sample=10))
    assert m1["policy"]["hash"] != m2["policy"]["hash"] == Policy(min_sample=10).hash
    a2 = next(r for r in json.loads((tmp_path / "b.json").read_text()) if r["key"] == "a2")
    assert a2["status"] == "scored" and a2["score"] == 82.14  # 1150/14


def test_cli_export_with_policy_file_and_progress(world: World, tmp_path: Path) -> None:
    """`windowrate export` writes the file and manifest and reports progress on stderr."""
    out = tmp_path / "units.csv"
    policy = tmp_path / "policy.toml"
    policy.write_text("min_sample = 5\n")
    env = dict(os.environ)
    env.update(
        {
            "WR_SERVER_DATABASE_URL": str(world.db.engine.url),
            "WR_SERVER_INFLUX__URL": world.url,
            "WR_LOG_LEVEL": "WARNING",
        }
    )
    cmd = [
        sys.executable, "-m", "windowrate", "export", "--from", "2026-03-01", "--to",
        "2026-03-02", "--level", "unit", "--out", str(out), "--policy", str(policy),
    ]  # fmt: skip
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "2/2 days" in res.stderr and "sha256" in res.stdout
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["format"] == "csv" and manifest["period"]["from"] == "2026-03-01"
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    u1 = next(r for r in rows if r["编码(key)"] == "u1")
    assert u1["有效评价数(ratings)"] == "56"  # 54 + the same-ticket one (unreviewed) + the 1st
    bad = subprocess.run(
        [*cmd[:7], "2026-02-28", *cmd[8:]], env=env, cwd=REPO, capture_output=True, timeout=60
    )
    assert bad.returncode != 0
    week = tmp_path / "week.json"
    res = subprocess.run(
        [*cmd[:4], "--period", "week", "--date", "2026-03-04", "--out", str(week)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(manifest_path(week).read_text())["period"]["to"] == "2026-03-08"


def _login(app: Any, username: str) -> TestClient:
    """A client logged in as `username`."""
    c = TestClient(app)
    c.__enter__()
    resp = c.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    c.headers["X-CSRF-Token"] = c.cookies["wr_csrf"]
    return c


def _wait(c: TestClient, job_id: str) -> dict[str, Any]:
    """Poll an export job until it ends."""
    for _ in range(300):
        job: dict[str, Any] = c.get(f"/api/exports/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError("export job did not finish")


def test_api_exports_respect_roles(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Office exports every hall; a hall manager only theirs; a viewer nothing; review by office."""
    monkeypatch.setenv("WR_SCORES_EXPORT_DIR", str(tmp_path / "exports"))
    scores_settings.get_settings.cache_clear()
    cfg = ServerSettings(
        database_url=str(world.db.engine.url),
        influx=InfluxSettings(url=world.url),
        timezone="Asia/Shanghai",
        cases=CaseSettings(poller=False),
    )
    with world.db.session() as s:
        create_user(s, "office", PASSWORD, "office")
        create_user(s, "mgr-hx", PASSWORD, "hall_manager", "hx")
        create_user(s, "viewer", PASSWORD, "viewer")
        s.commit()
    app = create_app(cfg)
    body = {"from": "2026-03-02", "to": "2026-03-02", "level": "window", "format": "json"}
    anon = TestClient(app)
    assert anon.post("/api/exports", json=body).status_code == 401
    office, mgr, viewer = _login(app, "office"), _login(app, "mgr-hx"), _login(app, "viewer")
    try:
        assert viewer.post("/api/exports", json=body).status_code == 403
        assert viewer.get("/api/scores?from=2026-03-02&to=2026-03-02").status_code == 403
        assert mgr.post("/api/exports", json={**body, "hall": "hz"}).status_code == 403
        mine = mgr.post("/api/exports", json=body)
        assert mine.status_code == 202 and mine.json()["hall"] == "hx"
        all_halls = office.post("/api/exports", json=body).json()
        job = _wait(mgr, mine.json()["id"])
        assert job["state"] == "done" and job["rows"] == 1 and job["progress"] == 1.0
        rows = mgr.get(f"/api/exports/{job['id']}/file").json()
        assert [(r["hall"], r["key"]) for r in rows] == [("hx", "z1")]
        assert office.get(f"/api/exports/{job['id']}").status_code == 404  # not theirs
        done = _wait(office, all_halls["id"])
        got = office.get(f"/api/exports/{done['id']}/file").content
        manifest = office.get(f"/api/exports/{done['id']}/manifest").json()
        assert done["rows"] == 5 and manifest["sha256"] == hashlib.sha256(got).hexdigest()
        scores = office.get("/api/scores?from=2026-03-02&to=2026-03-02&level=hall").json()
        assert {r["key"] for r in scores["rows"]} == {"hz", "hx"}
        month = office.get("/api/scores?period=month&date=2026-03-15&level=hall").json()
        assert (month["period_from"], month["period_to"]) == ("2026-03-01", "2026-03-31")
        assert office.get("/api/scores?from=2026-03-02").status_code == 422
        assert office.get("/api/scores?from=2026-03-02&to=2026-03-01").status_code == 422
        assert "评价得分导出" in office.get("/exports").text
        assert "Score export" in office.get("/exports?lang=en").text
        # Flags come from the rollup job; a hall manager sees their hall's, the office reviews.
        assert office.get("/api/scores/flags").json() == []
        with world.db.session() as s:
            build_rollups(s, world.influx, Period(DAY, DAY), TZ, Policy())
        flags = office.get("/api/scores/flags?status=pending").json()
        assert len(flags) == 13 and mgr.get("/api/scores/flags").json() == []
        same = next(f for f in flags if f["rule"] == "same_ticket")
        url = f"/api/scores/flags/{same['id']}/review"
        assert mgr.post(url, json={"verdict": "fraud"}).status_code == 403
        reviewed = office.post(url, json={"verdict": "fraud", "note": "补评"}).json()
        assert (reviewed["status"], reviewed["reviewed_by"]) == ("fraud", "office")
        after = office.get("/api/scores?from=2026-03-02&to=2026-03-02").json()
        assert after["exclusions"]["fraud"] == 1
        assert [e["id"] for e in after["excluded_ratings"] if e["reason"] == "fraud"] == [
            same["rating_id"]
        ]
        assert (
            office.post("/api/scores/flags/9999/review", json={"verdict": "fraud"}).status_code
            == 404
        )
    finally:
        for c in (office, mgr, viewer):
            c.__exit__(None, None, None)
        scores_settings.get_settings.cache_clear()


def test_export_page_in_chromium(
    world: World, broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headless Chromium: the office starts an export on /exports, sees it finish, downloads."""
    pw = pytest.importorskip("playwright.sync_api")
    monkeypatch.setenv("WR_SCORES_EXPORT_DIR", str(tmp_path / "exports"))
    scores_settings.get_settings.cache_clear()
    with world.db.session() as s:
        create_user(s, "office", PASSWORD, "office")
        s.commit()
    cfg = ServerSettings(
        port=free_port(),
        database_url=str(world.db.engine.url),
        influx=InfluxSettings(url=world.url),
        mqtt=MqttSettings(port=broker.port),
        cases=CaseSettings(poller=False),
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(cfg), host="127.0.0.1", port=cfg.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{cfg.port}"
    try:
        wait_until(lambda: server.started, 30, what="uvicorn started")
        with pw.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            login = {"username": "office", "password": PASSWORD}
            assert page.request.post(f"{base}/api/auth/login", data=login).ok
            page.goto(f"{base}/exports")
            page.fill("#from", "2026-03-02")
            page.fill("#to", "2026-03-02")
            page.select_option("#format", "json")
            page.click("#start")
            page.wait_for_selector("#links:not([hidden]), #error:not([hidden])", timeout=20_000)
            assert page.is_hidden("#error"), page.inner_text("#error")
            assert "5 行" in page.inner_text("#label") and "1/1 天" in page.inner_text("#label")
            href = page.get_attribute("#file", "href")
            assert href is not None
            rows = page.request.get(f"{base}{href}").json()
            assert [r["key"] for r in rows] == ["z1", "a1", "a2", "b1", "c9"]  # hx, then hz
            assert errors == []
            browser.close()
    finally:
        server.should_exit = True
        thread.join(30)
        scores_settings.get_settings.cache_clear()
