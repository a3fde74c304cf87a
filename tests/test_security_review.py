"""Security review of provisioning and broker files: each test proves one defect found."""

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from devstack.postgres import PgCluster
from server.app import create_app
from server.db.engine import Database
from server.provisioning import service
from server.provisioning.service import ProvisioningError
from server.settings import ServerSettings
from server.settings.provisioning import ProvisioningSettings
from tests.support import REPO
from tests.test_registry import login, make_user


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'race.db'}"
    cluster: PgCluster = request.getfixturevalue("pg")
    return cluster.new_database()


def test_two_concurrent_redeems_of_one_code_cannot_both_succeed(any_db: str) -> None:
    """Both requests read the code unused; the second must not spend it again (and get a
    second valid password) after the first committed."""
    db = Database(any_db)
    db.upgrade()
    try:
        with db.session() as s:
            service.add_device(s, hall="h1", device="k-race", window=None)
            code, _ = service.issue_code(s, "k-race", hours=1)
            s.commit()
        both_read = threading.Barrier(2, timeout=10)
        first_done = threading.Event()
        order: list[str] = []
        lock = threading.Lock()

        def before_write(_conn: Any, _cur: Any, statement: str, *_: Any) -> None:
            """Hold each redeem before its first write, until both have read the code."""
            name = threading.current_thread().name
            if not statement.lstrip().upper().startswith("UPDATE") or name in order:
                return
            both_read.wait()  # both have read the code unused
            with lock:
                order.append(name)
                second = len(order) == 2
            if second:  # the other redeem commits first
                first_done.wait(10)

        event.listen(db.engine, "before_cursor_execute", before_write)
        results: dict[str, Any] = {}

        def run() -> None:
            name = threading.current_thread().name
            with db.session() as s:
                try:
                    service.redeem(s, code)
                    s.commit()
                    results[name] = "ok"
                except ProvisioningError as exc:
                    s.rollback()
                    results[name] = exc.status
                finally:
                    if order and order[0] == name:
                        first_done.set()

        threads = [threading.Thread(target=run, name=f"t{i}") for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(map(str, results.values())) == ["410", "ok"], results
    finally:
        db.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    """A SQLite app whose provisioning manages broker files; admin `root` logged in."""
    settings = ServerSettings(
        database_url=f"sqlite:///{tmp_path / 'wr.db'}",
        gateway_metrics_urls=[],
        provisioning=ProvisioningSettings(broker_auth_dir=tmp_path / "auth", allow_plain_http=True),
    )
    with TestClient(create_app(settings)) as c:
        make_user(c, "root", "admin")
        login(c, "root")
        for hall in ("ha", "hb"):
            r = c.post("/api/registry/halls", json={"code": hall, "name": hall})
            assert r.status_code == 201, r.text
        make_user(c, "mgr-a", "hall_manager", "ha")
        make_user(c, "mgr-b", "hall_manager", "hb")
        yield c


def _as(c: TestClient, user: str) -> TestClient:
    """A second client of the same app logged in as `user`."""
    other = TestClient(c.app)
    login(other, user)
    return other


def test_a_device_moved_to_another_hall_is_managed_by_its_new_hall_only(
    app: TestClient,
) -> None:
    """After the registry moves a device from hall A to B, A's manager may no longer issue a
    code for it (which would hand them its broker login) and the kiosk learns hall B."""
    r = app.post("/api/provisioning/devices", json={"hall": "ha", "device": "k-move"})
    assert r.status_code == 201, r.text
    r = app.patch("/api/registry/devices/k-move", json={"hall": "hb"})
    assert r.status_code == 200, r.text
    mgr_a, mgr_b = _as(app, "mgr-a"), _as(app, "mgr-b")
    assert mgr_a.post("/api/provisioning/devices/k-move/code").status_code == 403
    assert mgr_a.post("/api/provisioning/devices/k-move/revoke").status_code == 403
    r = mgr_b.post("/api/provisioning/devices/k-move/code")
    assert r.status_code == 201, r.text
    assert r.json()["hall"] == "hb"
    redeemed = app.post("/api/provisioning/redeem", json={"code": r.json()["code"]})
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json()["hall"] == "hb"  # the hall its ACL allows
    listed = {a["username"]: a for a in mgr_b.get("/api/provisioning/accounts").json()}
    assert "k-move" in listed and listed["k-move"]["hall"] == "hb"
    assert "k-move" not in {a["username"] for a in mgr_a.get("/api/provisioning/accounts").json()}


def test_a_hall_manager_cannot_revoke_the_hall_uplink(app: TestClient) -> None:
    """The uplink login of hall A is a service account: A's manager may not cut the link."""
    with app.app.state.db.session() as s:  # type: ignore[attr-defined]
        service.set_service_account(s, username="uplink-ha", role="uplink", hall="ha")
        s.commit()
    mgr_a = _as(app, "mgr-a")
    assert mgr_a.post("/api/provisioning/devices/uplink-ha/revoke").status_code == 403
    with app.app.state.db.session() as s:  # type: ignore[attr-defined]
        assert not service.find_account(s, "uplink-ha").revoked


def test_broker_conf_with_uplink_password_is_private_even_over_an_existing_file(
    tmp_path: Path,
) -> None:
    """`windowrate broker conf --out` over a 0644 file must not leave the password readable."""
    out = tmp_path / "mosquitto.conf"
    out.write_text("# old\n")
    out.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WR_")}
    env["WR_UPLINK_PASSWORD"] = "s3cret-uplink-pw"
    args = ["--pki-dir", str(tmp_path), "--auth-dir", str(tmp_path), "--out", str(out)]
    args += ["--uplink-hall", "ha", "--central-host", "centre", "--uplink-user", "uplink-ha"]
    done = subprocess.run(
        [sys.executable, "-m", "windowrate", "broker", "conf", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "s3cret-uplink-pw" in out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) & 0o077 == 0
