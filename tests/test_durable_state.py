"""Durable state: webhook outbox, export jobs and login throttling survive a SIGKILL of the server.

The server runs as a real `windowrate server run` process on a real influxd (ratings written
as the gateway's line protocol); webhooks go to a real HTTP receiver in this process. The
migration 0007 is checked on SQLite and on a real PostgreSQL with 0006 data in it.
"""

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

from devstack.services import Influxd, die_with_parent, free_port, stop_process
from protocol.messages import RatingEvent
from server.app import create_app
from server.auth.service import create_user
from server.cases.models import Case, WebhookDelivery
from server.cases.webhook import (
    DELIVERY_HEADER,
    KEEP_DELIVERED,
    SIGNATURE_HEADER,
    WebhookSender,
    given_up_deliveries,
    pending_deliveries,
    verify,
)
from server.db.engine import Database, alembic_config, upgrade
from server.db.models import Base, LoginFailure, utcnow
from server.scores.jobs import INTERRUPTED, ExportJobRow
from storage.lineproto import rating_line
from tests.support import CHILDREN, REPO, rating_doc, wait_until
from tests.test_registry import PASSWORD, db_url

__all__ = ["create_app", "db_url"]  # fixtures used here; the app registers every table

SECRET = "durable-webhook-secret"
WRONG = "not the password at all"


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """One influxd for the module."""
    i = Influxd(tmp_path_factory.mktemp("influxd"))
    i.start()
    yield i
    i.stop()


def write_ratings(srv: "ServerProcess", docs: list[dict[str, Any]]) -> None:
    """Write ratings to the server's InfluxDB database as the gateway does (line protocol)."""
    url, name = srv.influx_url, srv.influx_db
    httpx.post(f"{url}/query", params={"q": f'CREATE DATABASE "{name}"'}).raise_for_status()
    body = "\n".join(rating_line(RatingEvent.model_validate_json(json.dumps(d))) for d in docs)
    resp = httpx.post(f"{url}/write", params={"db": name}, content=body.encode())
    assert resp.status_code == 204, resp.text


class ServerProcess:
    """`windowrate server run` as a child process on a SQLite file; killable and restartable."""

    def __init__(self, run_dir: Path, influx_url: str, **env: str) -> None:
        """Prepare (not start) the server."""
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = f"sqlite:///{run_dir / 'windowrate.db'}"
        self.influx_url = influx_url
        self.influx_db = f"wr_{run_dir.parent.name}_{run_dir.name}"  # one per test
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WR_")}
        self.env.update(
            WR_SERVER_HOST="127.0.0.1",
            WR_SERVER_PORT=str(self.port),
            WR_SERVER_DATABASE_URL=self.db_url,
            WR_SERVER_INFLUX__URL=influx_url,
            WR_SERVER_INFLUX__DATABASE=self.influx_db,
            WR_SERVER_LIVE__ENABLED="false",
            WR_SERVER_CASES__POLL_S="0.2",
            WR_SCORES_EXPORT_DIR=str(run_dir / "exports"),
            WR_SCORES_ROLLUP_INTERVAL_S="0",
            **env,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start and wait until the app answers (its database is migrated by then)."""
        self.starts += 1
        with open(self.run_dir / f"server-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "windowrate", "server", "run"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                preexec_fn=die_with_parent,
            )  # fmt: skip
        CHILDREN.append(self.proc)

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            try:
                return httpx.get(f"{self.url}/api/auth/me", timeout=2).status_code == 401
            except httpx.HTTPError:
                return False

        wait_until(up, 60, what="server up")

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM and wait (kill after 30 s)."""
        stop_process(self.proc)

    def log_tail(self) -> str:
        """The end of the latest log."""
        path = self.run_dir / f"server-{self.starts}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def db(self) -> Database:
        """The server's database, opened from this process."""
        return Database(self.db_url)

    def add_user(self, username: str, role: str) -> None:
        """Create a user with PASSWORD directly in the server's database."""
        db = self.db()
        try:
            with db.session() as session:
                create_user(session, username, PASSWORD, role)
                session.commit()
        finally:
            db.close()

    def login(self, username: str) -> httpx.Client:
        """Return a client logged in as `username`."""
        c = httpx.Client(base_url=self.url, timeout=30)
        resp = c.post("/api/auth/login", json={"username": username, "password": PASSWORD})
        assert resp.status_code == 200, resp.text
        c.headers["X-CSRF-Token"] = c.cookies["wr_csrf"]
        return c


@pytest.fixture
def server(influx: Influxd, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """A factory of server processes (with extra env); each is stopped at the end."""
    made: list[ServerProcess] = []

    def make(**env: str) -> ServerProcess:
        srv = ServerProcess(tmp_path / f"server{len(made)}", influx.url, **env)
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.stop()


class Receiver:
    """A real HTTP webhook receiver that counts the POSTs it answered 2xx, per delivery id."""

    def __init__(self, port: int) -> None:
        """Prepare (not start) the receiver on `port`."""
        self.port = port
        self.posts: list[tuple[str, str, int, bytes, str]] = []  # id, event, case, body, sig
        self.lock = threading.Lock()
        self.on_post: Callable[[str], bool] | None = None  # True: drop the connection unanswered
        self.status = 204  # the answer; a non-2xx one is not counted as a delivery
        self.refused = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        """Listen on the port."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                delivery = self.headers[DELIVERY_HEADER]
                if receiver.on_post is not None and receiver.on_post(delivery):
                    self.close_connection = True
                    return
                if not 200 <= receiver.status < 300:
                    receiver.refused += 1
                    self.send_response(receiver.status)
                    self.end_headers()
                    return
                doc = json.loads(body)
                with receiver.lock:
                    receiver.posts.append(
                        (delivery, doc["event"], int(doc["case_id"]), body,
                         self.headers[SIGNATURE_HEADER])
                    )  # fmt: skip
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Stay quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def per_delivery(self) -> Counter[str]:
        """POSTs answered, per delivery id."""
        with self.lock:
            return Counter(p[0] for p in self.posts)

    def per_case(self, event: str) -> Counter[int]:
        """POSTs answered for `event`, per case id."""
        with self.lock:
            return Counter(p[2] for p in self.posts if p[1] == event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver on a free port, not listening yet."""
    r = Receiver(free_port())
    yield r
    r.stop()


def _negatives(hall: str, n: int, first_seq: int = 1) -> list[dict[str, Any]]:
    """`n` negative ratings (level 1 or 2 of 5) pressed in the last minute."""
    now_ms = int(time.time() * 1000)
    return [
        rating_doc(hall, "k-1", first_seq + i, level=1 + i % 2, ts=now_ms - 60_000 + i * 100)
        for i in range(n)
    ]


def _count(db: Database, what: Any) -> int:
    """Number of rows of a table."""
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(what)) or 0)


def test_webhooks_pending_at_a_sigkill_are_delivered_once_after_the_restart(
    influx: Influxd, server: Callable[..., ServerProcess], receiver: Receiver
) -> None:
    """Receiver down, cases open, SIGKILL; after the restart every alert arrives exactly once."""
    srv = server(
        WR_SERVER_CASES__WEBHOOK_URLS=f"http://127.0.0.1:{receiver.port}/hook",
        WR_SERVER_CASES__WEBHOOK_SECRET=SECRET,
    )
    srv.start()
    srv.add_user("root", "admin")
    write_ratings(srv, [*_negatives("hw", 6), rating_doc("hw", "k-2", 1, level=5)])
    db = srv.db()
    try:
        wait_until(lambda: _count(db, Case) == 6, 30, what="six cases")
        with db.session() as session:
            case_ids = sorted(session.scalars(select(Case.id)))
        admin = srv.login("root")
        moved = admin.post(f"/api/cases/{case_ids[0]}/transition", json={"to": "contacted"})
        assert moved.status_code == 200, moved.text

        def tried_all() -> bool:
            with db.session() as session:
                rows = session.scalars(select(WebhookDelivery)).all()
            return len(rows) == 7 and all(r.attempts >= 1 and r.last_error for r in rows)

        wait_until(tried_all, 30, what="every delivery tried against the refusing receiver")
        srv.kill()
        with db.session() as session:
            assert pending_deliveries(session) == 7
        receiver.start()
        srv.start()

        def all_sent() -> bool:
            with db.session() as session:
                return pending_deliveries(session) == 0

        wait_until(all_sent, 30, what="every pending delivery sent after the restart")
        # More cases with the receiver up and the restarted server: sent at once, once.
        write_ratings(srv, _negatives("hw", 3, first_seq=100))
        wait_until(lambda: _count(db, Case) == 9, 30, what="three more cases")
        wait_until(all_sent, 30, what="the new deliveries sent")
        srv.stop()  # nothing can be sent after this: the counts below are final
        with db.session() as session:
            all_cases = set(session.scalars(select(Case.id)))
            rows = session.scalars(select(WebhookDelivery)).all()
    finally:
        db.close()
    assert len(rows) == 10 and all(r.delivered is not None for r in rows)
    assert set(receiver.per_delivery().values()) == {1}  # no delivery id twice
    assert set(receiver.per_delivery()) == {r.delivery_id for r in rows}
    opened = receiver.per_case("case.opened")
    assert set(opened) == all_cases and set(opened.values()) == {1}  # every case, none twice
    assert receiver.per_case("case.state_changed") == Counter({case_ids[0]: 1})
    for _id, _event, _case, body, sig in receiver.posts:
        assert verify(SECRET.encode(), body, sig)


def test_a_crash_between_post_and_mark_repeats_the_same_delivery_id(
    influx: Influxd, server: Callable[..., ServerProcess], receiver: Receiver
) -> None:
    """The server dies after posting but before marking: the repeat carries the same id."""
    srv = server(WR_SERVER_CASES__WEBHOOK_URLS=f"http://127.0.0.1:{receiver.port}/hook")
    seen: list[str] = []
    killed = threading.Event()

    def crash_on_first(delivery: str) -> bool:
        seen.append(delivery)
        if len(seen) == 1:
            srv.kill()  # the POST arrived; the server dies before it can mark the row
            killed.set()
            return True
        return False

    receiver.on_post = crash_on_first
    receiver.start()
    srv.start()
    write_ratings(srv, _negatives("hc", 1))
    assert killed.wait(30), "no POST arrived"
    db = srv.db()
    try:
        with db.session() as session:
            assert pending_deliveries(session) == 1
    finally:
        db.close()
    srv.start()
    wait_until(lambda: receiver.posts, 30, what="the repeat after the restart")
    srv.stop()
    assert seen[1] == seen[0]  # a receiver drops a repeat by this id
    assert receiver.per_delivery() == Counter({seen[0]: 1})


@pytest.fixture
def outbox_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database for senders run in this process."""
    db = Database(f"sqlite:///{tmp_path / 'outbox.db'}")
    db.upgrade()
    yield db
    db.close()


def _pending(db: Database) -> int:
    """Rows not delivered yet."""
    with db.session() as session:
        return pending_deliveries(session)


def test_a_delivery_given_up_is_counted_and_retried_at_the_next_start(
    outbox_db: Database, receiver: Receiver
) -> None:
    """A receiver refusing past the retries: the row is given up, still pending, sent next start."""
    receiver.status = 500
    receiver.start()
    url = f"http://127.0.0.1:{receiver.port}/hook"
    first = WebhookSender(outbox_db, [url], SECRET, retries=1)
    first.start()
    first.send("case.opened", {"case_id": 7}, case_id=7)
    wait_until(lambda: first.failed == 1, 30, what="the delivery given up")
    first.stop()
    assert receiver.refused == 2  # the first try and one retry
    with outbox_db.session() as session:
        assert (pending_deliveries(session), given_up_deliveries(session)) == (1, 1)
    receiver.status = 204
    second = WebhookSender(outbox_db, [url], SECRET, retries=1)
    second.start()
    wait_until(lambda: _pending(outbox_db) == 0, 30, what="the given-up delivery sent")
    second.stop()
    assert receiver.per_case("case.opened") == Counter({7: 1})
    assert second.delivered == 1


def test_delivered_rows_are_kept_for_30_days(outbox_db: Database) -> None:
    """The sender's start deletes rows delivered more than KEEP_DELIVERED ago, only those."""
    now = utcnow()
    with outbox_db.session() as session:
        for age in (KEEP_DELIVERED + timedelta(hours=1), KEEP_DELIVERED - timedelta(hours=1)):
            session.add(
                WebhookDelivery(
                    delivery_id=str(age), event="case.opened", case_id=1, url="http://x/",
                    body="{}", created=now - age, attempts=1, next_attempt=now - age,
                    delivered=now - age, last_error="",
                )
            )  # fmt: skip
        session.commit()
    sender = WebhookSender(outbox_db, [], None, 3)
    sender.start()
    sender.stop()
    with outbox_db.session() as session:
        left = session.scalars(select(WebhookDelivery.delivery_id)).all()
    assert left == [str(KEEP_DELIVERED - timedelta(hours=1))]


def test_two_senders_on_one_database_post_each_delivery_once(
    outbox_db: Database, receiver: Receiver
) -> None:
    """Two server processes' senders share the outbox: each row is claimed by one of them."""
    receiver.start()
    url = f"http://127.0.0.1:{receiver.port}/hook"
    a = WebhookSender(outbox_db, [url], None, retries=3)
    b = WebhookSender(outbox_db, [url], None, retries=3)
    with outbox_db.session() as session:
        for case_id in range(1, 41):
            a.enqueue(session, "case.opened", {"case_id": case_id}, case_id)
        session.commit()
    a.start()
    b.start()
    wait_until(lambda: _pending(outbox_db) == 0, 60, what="every row sent")
    a.stop()
    b.stop()
    assert len(receiver.per_delivery()) == 40
    assert set(receiver.per_delivery().values()) == {1}
    assert a.delivered + b.delivered == 40, (a.delivered, b.delivered)


def test_the_sender_survives_a_database_error(
    outbox_db: Database, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The outbox table unreadable for a while: the sender logs it and goes on afterwards."""
    receiver.start()
    sender = WebhookSender(outbox_db, [f"http://127.0.0.1:{receiver.port}/hook"], None, 3)
    sender.start()
    with outbox_db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE webhook_outbox RENAME TO webhook_outbox_away"))
    with caplog.at_level(logging.WARNING, logger="server.cases.webhook"):
        sender.wake()
        wait_until(lambda: "webhook outbox unavailable" in caplog.text, 30, what="the error logged")
    with outbox_db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE webhook_outbox_away RENAME TO webhook_outbox"))
    sender.send("case.overdue", {"case_id": 3}, case_id=3)
    wait_until(lambda: _pending(outbox_db) == 0, 30, what="the delivery after the error")
    sender.stop()
    assert receiver.per_case("case.overdue") == Counter({3: 1})


def test_export_jobs_survive_a_restart_and_a_killed_one_fails(
    influx: Influxd, server: Callable[..., ServerProcess]
) -> None:
    """A finished export is listed and served after a SIGKILL; the one then running has failed."""
    srv = server()
    write_ratings(srv, [rating_doc("he", "k-1", i, level=5 - i % 3) for i in range(1, 20)])
    srv.start()
    srv.add_user("office", "office")
    office = srv.login("office")
    today = time.strftime("%Y-%m-%d")
    body = {"from": today, "to": today, "format": "csv", "level": "window"}
    done = office.post("/api/exports", json=body)
    assert done.status_code == 202, done.text
    done_id = done.json()["id"]
    wait_until(
        lambda: office.get(f"/api/exports/{done_id}").json()["state"] == "done", 30, what="export"
    )
    data = office.get(f"/api/exports/{done_id}/file").content
    # Two centuries of days: still running when the server is killed.
    long = office.post("/api/exports", json={**body, "from": "2000-01-01", "to": "2199-12-31"})
    assert long.status_code == 202, long.text
    long_id = long.json()["id"]
    wait_until(
        lambda: office.get(f"/api/exports/{long_id}").json()["state"] == "running",
        30,
        what="the long export running",
    )
    srv.kill()
    office.close()
    db = srv.db()
    try:
        with db.session() as session:
            row = session.get(ExportJobRow, long_id)
            assert row is not None and row.state == "running"  # as the crash left it
    finally:
        db.close()
    srv.start()
    office = srv.login("office")
    listed = {j["id"]: j for j in office.get("/api/exports").json()}
    assert set(listed) == {done_id, long_id}
    finished = listed[done_id]
    assert (finished["state"], finished["owner_name"], finished["format"]) == (
        "done",
        "office",
        "csv",
    )
    assert finished["sha256"] == hashlib.sha256(data).hexdigest()
    assert office.get(f"/api/exports/{done_id}/file").content == data
    killed = office.get(f"/api/exports/{long_id}").json()
    assert (killed["state"], killed["error"]) == ("failed", INTERRUPTED)
    assert killed["period_from"] == "2000-01-01" and killed["period_to"] == "2199-12-31"
    assert office.get(f"/api/exports/{long_id}/file").status_code == 409
    for path in (srv.run_dir / "exports" / done_id).iterdir():
        path.unlink()  # the files lost (not restored): a clear 404, not a server error
    gone = office.get(f"/api/exports/{done_id}/file")
    assert gone.status_code == 404 and "start it again" in gone.text
    office.close()


def test_login_throttle_survives_a_restart(server: Callable[..., ServerProcess]) -> None:
    """Five failed logins, SIGKILL and restart: the next attempt, right password, is refused."""
    srv = server()
    srv.start()
    srv.add_user("clerk", "viewer")
    c = httpx.Client(base_url=srv.url, timeout=30)
    for _ in range(5):
        bad = c.post("/api/auth/login", json={"username": "clerk", "password": WRONG})
        assert bad.status_code == 401, bad.text
    srv.kill()
    srv.start()
    again = c.post("/api/auth/login", json={"username": "clerk", "password": PASSWORD})
    assert again.status_code == 429, again.text
    assert again.json()["error"] == "too_many_attempts"
    assert 1 <= int(again.headers["Retry-After"]) <= 15 * 60
    c.close()
    db = srv.db()
    try:
        with db.session() as session:
            keys = Counter(session.scalars(select(LoginFailure.key)))
    finally:
        db.close()
    assert keys == Counter({"user:clerk": 5, "ip:127.0.0.1": 5})


def test_migration_0007_upgrades_a_0006_database_with_data(db_url: str) -> None:
    """A database at 0006 with a case, a user and a hall keeps them and gains the new tables."""
    db = Database(db_url)
    try:
        upgrade(db.engine, "0006")
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO halls (code, name) VALUES ('h1', 'Hall one')"))
            conn.execute(
                text(
                    "INSERT INTO users (username, password_hash, role, active, created)"
                    " VALUES ('root', '$argon2id$x', 'admin', true, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    'INSERT INTO cases (rating_id, hall, "window", device, level, scale, reasons,'
                    " rating_ts, opened, due, state, updated, notes) VALUES ('r-1', 'h1', 'a1',"
                    " 'k-1', 1, 5, '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_DATE,"
                    " 'open', CURRENT_TIMESTAMP, '')"
                )
            )
        db.upgrade()
        tables = set(inspect(db.engine).get_table_names())
        assert {"webhook_outbox", "export_jobs", "login_failures"} <= tables
        with db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "0008"
            assert conn.scalar(text("SELECT count(*) FROM cases WHERE rating_id = 'r-1'")) == 1
            assert conn.scalar(text("SELECT role FROM users WHERE username = 'root'")) == "admin"
        with db.session() as session:
            assert pending_deliveries(session) == 0
        cfg = alembic_config()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0006")
        assert not {"webhook_outbox", "export_jobs", "login_failures"} & set(
            inspect(db.engine).get_table_names()
        )
        db.upgrade()
        assert "webhook_outbox" in inspect(db.engine).get_table_names()
    finally:
        db.close()
