"""Gateway benchmarks against the path's own limit: live throughput, and a backlog's drain.

`run_bench`: the same pre-built RatingEvents go through the same broker twice in one run — to
`mosquitto_sub` (QoS 1, persistent session: Mosquitto's own C client, the baseline) and to the
gateway process started as `windowrate gateway run` starts it (gap checker on, as in
production) into a real InfluxDB. Each consumer's subscription is in place before the clock
starts (the C client's session exists and a probe came through; the gateway's metrics show its
session subscribed); nothing sleeps a fixed time. `run_backlog`: the gateway's session is made,
the gateway stopped, N ratings from D devices are queued in the broker (timed as setup), the
gateway started again; `drained_s` runs from its start until every rating was written and
acknowledged. Both count what InfluxDB holds afterwards: lost and doubled ratings.
"""

import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from devstack.services import (
    Influxd,
    Mosquitto,
    die_with_parent,
    free_port,
    require_binary,
    stop_process,
)
from protocol.decode import Rejection, decode
from storage.client import InfluxClient, InfluxSettings

log = logging.getLogger(__name__)

TOPIC_ALL = "wr/v1/+/+/rating"
SESSION_S = 7 * 86_400
TIMEOUT_S = 1800.0
NOT_MEASURED = [
    "TLS and broker authentication (loopback listener, anonymous)",
    "kiosks: publishers are mosquitto_pub from pre-built files, not the kiosk outbox",
    "services share the same 2 cores with the publishers (one machine)",
]


@dataclass(frozen=True)
class Device:
    """One simulated kiosk: its hall, name and the file of its ratings (JSON lines)."""

    index: int
    hall: str
    name: str
    path: Path
    ratings: int

    @property
    def topic(self) -> str:
        """Its rating topic."""
        return f"wr/v1/{self.hall}/{self.name}/rating"


def rating_id(device: int, seq: int) -> str:
    """A deterministic UUID (version 8) per device and seq: the same rating, the same id."""
    return f"0190f3a2-{device:04x}-8000-8000-{seq:012x}"


def rating_line(device: int, hall: str, name: str, seq: int, ts: int) -> str:
    """One valid RatingEvent as a JSON line (json.dumps: ~4x faster than the model's dump)."""
    level = 1 + (seq * 7 + device) % 5
    doc = {
        "v": 1,
        "id": rating_id(device, seq),
        "device": name,
        "hall": hall,
        "window": f"w{device % 1000:03d}",
        "seq": seq,
        "ts": ts,
        "clock_synced": True,
        "scale": 5,
        "level": level,
        "input": "touch",
        "prompted": True,
        "staff": "0457",
        "ticket": f"A{seq % 10000:04d}",
        "item": "330100-001",
        "reasons": [],
    }
    return json.dumps(doc, separators=(",", ":"))


def build_payloads(
    out: Path, ratings: int, devices: int, halls: list[str], first_device: int = 0
) -> list[Device]:
    """Write one file per device (seq 1…n, ids deterministic); each file's ends are validated."""
    now = int(time.time() * 1000)
    per = [ratings // devices + (1 if i < ratings % devices else 0) for i in range(devices)]
    step = max(1, min(1000, 3_600_000 // max(max(per), 1)))  # all within the last two hours
    base = now - 2 * 3_600_000
    result = []
    for i, n in enumerate(per):
        index = first_device + i
        name = f"b-{index:04d}"
        dev = Device(index, halls[i % len(halls)], name, out / f"{name}.jsonl", n)
        lines = [rating_line(index, dev.hall, name, s, base + s * step) for s in range(1, n + 1)]
        for line in (lines[0], lines[-1]) if lines else ():
            verdict = decode(dev.topic, line.encode(), now)
            if isinstance(verdict, Rejection):
                raise RuntimeError(f"bench payload rejected: {verdict}")
        dev.path.write_text("\n".join(lines) + "\n" if lines else "")
        result.append(dev)
    return result


class Publishers:
    """`mosquitto_pub -l` (QoS 1) per device file, at most `parallel` at once, on a thread."""

    def __init__(self, port: int, devices: list[Device], parallel: int) -> None:
        """Prepare; start() begins publishing."""
        self.port, self.devices, self.parallel = port, devices, max(1, parallel)
        self.error: str | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="publishers", daemon=True)

    def start(self) -> "Publishers":
        """Start publishing in the background."""
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """True until every publisher has exited."""
        return self._thread.is_alive()

    def wait(self, timeout: float = TIMEOUT_S) -> float:
        """Wait until every publisher exited; return the seconds publishing took."""
        self._thread.join(timeout)
        if self._thread.is_alive() or self.error:
            raise RuntimeError(self.error or f"publishers still running after {timeout} s")
        return self.seconds

    def _run(self) -> None:
        """Keep `parallel` publishers running until every file is sent."""
        pub = require_binary("mosquitto_pub", "mosquitto-clients")
        args = [pub, "-h", "127.0.0.1", "-p", str(self.port), "-V", "mqttv5", "-q", "1"]
        pending = list(reversed(self.devices))
        running: list[subprocess.Popen[bytes]] = []
        t0 = time.perf_counter()
        while pending or running:
            while pending and len(running) < self.parallel:
                d = pending.pop()
                with d.path.open("rb") as stdin:
                    cmd = [*args, "-M", "100", "-i", f"pub-{d.name}", "-t", d.topic, "-l"]
                    running.append(subprocess.Popen(cmd, stdin=stdin, preexec_fn=die_with_parent))
            for p in [p for p in running if p.poll() is not None]:
                running.remove(p)
                if p.returncode != 0:
                    self.error = f"mosquitto_pub exited with {p.returncode}"
            time.sleep(0.005)
        self.seconds = time.perf_counter() - t0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's children that have exited and been reaped."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def drop_session(port: int, client_id: str) -> None:
    """Connect as `client_id` with a clean start and no expiry: the broker forgets its session."""
    sub = require_binary("mosquitto_sub", "mosquitto-clients")
    cmd = [sub, "-p", str(port), "-V", "mqttv5", "-i", client_id, "-t", "wr/none", "-E"]
    subprocess.run(cmd, check=True, timeout=30, preexec_fn=die_with_parent)


def leftover(port: int, client_id: str) -> int:
    """Messages still queued in the session `client_id` (taken over for 3 s; run after timing)."""
    sub = require_binary("mosquitto_sub", "mosquitto-clients")
    cmd = [sub, "-p", str(port), "-V", "mqttv5", "-q", "1", "-c", "-x", str(SESSION_S)]
    cmd += ["-i", client_id, "-t", TOPIC_ALL, "-R", "-W", "3"]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
    return len(out.stdout.splitlines())


class GatewayProcess:
    """The gateway as `windowrate gateway run` runs it, configured by WR_GATEWAY_* variables."""

    def __init__(
        self, run: Path, broker_port: int, influx_url: str, client_id: str, **env: str
    ) -> None:
        """Prepare; start() launches it (again, with the same data directory)."""
        self.run, self.client_id = run, client_id
        self.metrics_port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            WR_GATEWAY_MQTT__PORT=str(broker_port),
            WR_GATEWAY_INFLUX__URL=influx_url,
            WR_GATEWAY_METRICS__PORT=str(self.metrics_port),
            WR_GATEWAY_CLIENT_ID=client_id,
            WR_GATEWAY_DATA_DIR=str(run / client_id),
            WR_LOG_LEVEL="WARNING",
            **env,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (its log: <run>/<client id>.log)."""
        log_file = open(self.run / f"{self.client_id}.log", "ab")  # noqa: SIM115 - child's
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "windowrate", "gateway", "run"],
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        log_file.close()

    def metrics(self) -> dict[str, float]:
        """Its /metrics, each name summed over its labels."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                name = name.split("{", 1)[0]
                values[name] = values.get(name, 0.0) + float(value)
        return values

    def wait_subscribed(self, timeout: float = 60.0) -> float:
        """Wait until its session is up with the SUBACK granted; return the seconds waited."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}; see {self.run}")
            try:
                if self.metrics().get("windowrate_gateway_session_active") == 1:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"gateway {self.client_id} not subscribed after {timeout} s")

    def stop(self) -> None:
        """SIGTERM (it finishes its batch and disconnects; the session stays) and wait."""
        stop_process(self.proc)
        self.proc = None


def wait_written(
    gateways: list[GatewayProcess], ratings: int, acked: bool = False, timeout: float = TIMEOUT_S
) -> None:
    """Poll the gateways' metrics until `ratings` were written (and, if asked, all acked)."""
    deadline = time.monotonic() + timeout
    while True:
        ms = [g.metrics() for g in gateways]
        written = sum(m.get("windowrate_gateway_ratings_written_total", 0) for m in ms)
        in_flight = sum(m.get("windowrate_gateway_in_flight_messages", 0) for m in ms)
        if written >= ratings and (not acked or in_flight == 0):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"gateways stored {written:.0f} of {ratings} in {timeout} s")
        time.sleep(0.02)


def stored(url: str, database: str, where: str = '"hall" =~ /^bench/') -> tuple[int, int]:
    """(points, distinct rating ids) of measurement `rating` in `database`."""

    def scalar(q: str) -> int:
        with InfluxClient(InfluxSettings(url=url, database=database, timeout_s=300)) as c:
            series = c.series(q)
        return int(series[0].values[0][1]) if series else 0

    # Points counted on the same field as the distinct ids: Node-RED's points (bench peers)
    # counted by "seq" came out 1,000 fewer than their distinct ids.
    points = scalar(f'SELECT count("id") FROM "rating" WHERE {where}')
    distinct = scalar(f'SELECT count(distinct("id")) FROM "rating" WHERE {where}')
    return points, distinct


def _discard(stream: IO[bytes]) -> None:
    """Read a pipe to its end."""
    while stream.read(1 << 16):
        pass


def baseline(port: int, devices: list[Device], ratings: int) -> float:
    """Seconds for mosquitto_pub → broker → mosquitto_sub (QoS 1) to move every rating."""
    sub = require_binary("mosquitto_sub", "mosquitto-clients")
    args = [sub, "-p", str(port), "-V", "mqttv5", "-q", "1", "-c", "-x", "3600"]
    args += ["-i", "bench-sub", "-t", TOPIC_ALL]
    subprocess.run([*args, "-E"], check=True, timeout=30, preexec_fn=die_with_parent)
    consumer = subprocess.Popen(
        [*args, "-C", str(ratings + 1)], stdout=subprocess.PIPE, preexec_fn=die_with_parent
    )
    assert consumer.stdout is not None
    pub = require_binary("mosquitto_pub", "mosquitto-clients")
    probe = [pub, "-p", str(port), "-V", "mqttv5", "-q", "1", "-t", "wr/v1/probe/p/rating"]
    subprocess.run([*probe, "-m", "probe"], check=True, timeout=30, preexec_fn=die_with_parent)
    if consumer.stdout.readline().strip() != b"probe":  # connected and reading the session
        raise RuntimeError("mosquitto_sub did not get the probe first")
    drain = threading.Thread(target=_discard, args=(consumer.stdout,), daemon=True)
    t0 = time.perf_counter()
    pubs = Publishers(port, devices, len(devices)).start()
    drain.start()
    consumer.wait(TIMEOUT_S)
    seconds = time.perf_counter() - t0
    pubs.wait()
    drain.join(10)
    drop_session(port, "bench-sub")  # it would queue the gateway leg's ratings
    return seconds


def gateway_leg(
    run: Path, broker: Mosquitto, influx: Influxd, devices: list[Device], gateways: int = 1
) -> dict[str, Any]:
    """Start the gateway(s), publish every device's ratings, time until all are written."""
    halls = sorted({d.hall for d in devices})
    procs = []
    for i in range(gateways):
        env = {"WR_GATEWAY_HALLS": ",".join(halls[i::gateways])} if gateways > 1 else {}
        procs.append(GatewayProcess(run, broker.port, influx.url, f"bench-gw-{i}", **env))
    ratings = sum(d.ratings for d in devices)
    try:
        for g in procs:
            g.start()
        for g in procs:
            g.wait_subscribed()
        pids = [g.proc.pid for g in procs if g.proc] + [_pid(broker), _pid(influx)]
        cpu0 = [cpu_s(p) for p in pids]
        children0 = children_cpu_s()
        t0 = time.perf_counter()
        pubs = Publishers(broker.port, devices, len(devices)).start()
        wait_written(procs, ratings)
        seconds = time.perf_counter() - t0
        cpu = [round(cpu_s(p) - c, 2) for p, c in zip(pids, cpu0, strict=True)]
        published_s = pubs.wait()
        # The publishers are the only children reaped in between (the gateways still run).
        pub_cpu = round(children_cpu_s() - children0, 2)
        ms = [g.metrics() for g in procs]
    finally:
        for g in procs:
            g.stop()
    used = {
        "gateways": round(sum(cpu[:-2]), 2),
        "mosquitto": cpu[-2],
        "influxd": cpu[-1],
        "publishers": pub_cpu,
    }
    return {
        "seconds": seconds,
        "published_s": round(published_s, 3),
        "cpu_s": used,
        "received": sum(m.get("windowrate_gateway_link_received_total", 0) for m in ms),
        "skipped_redeliveries": sum(m.get("windowrate_gateway_duplicates_total", 0) for m in ms),
    }


def _pid(service: Mosquitto | Influxd) -> int:
    """The pid of a running service."""
    assert service.proc is not None
    return service.proc.pid


def run_bench(ratings: int = 100_000, connections: int = 10, gateways: int = 1) -> dict[str, Any]:
    """Baseline and gateway on the same fresh broker and InfluxDB; return the result row."""
    run = Path(tempfile.mkdtemp(prefix="wr-bench-gateway-"))
    broker = Mosquitto(run / "mosquitto")
    influx = Influxd(run / "influxd")
    try:
        t = time.perf_counter()
        broker.start()
        influx.start()
        halls = ["bench"] if gateways == 1 else [f"bench-{i}" for i in range(gateways)]
        devices = build_payloads(run, ratings, connections, halls)
        setup_s = time.perf_counter() - t
        b_seconds = baseline(broker.port, devices, ratings)
        ours = gateway_leg(run, broker, influx, devices, gateways)
        points, distinct = stored(influx.url, "windowrate")
    finally:
        influx.stop()
        broker.stop()
        shutil.rmtree(run, ignore_errors=True)
    r, b = ratings / ours["seconds"], ratings / b_seconds
    total_cpu = sum(ours["cpu_s"].values())
    cores = os.cpu_count() or 1
    return {
        "ratings": ratings,
        "seconds": round(ours["seconds"], 3),
        "ratings_per_s": round(r, 1),
        "broker_qos1_per_s": round(b, 1),
        "ratio": round(r / b, 3),
        "lost": ratings - distinct,
        "duplicates": points - distinct,
        "redelivered": int(ours["received"]) - ratings,
        "skipped_redeliveries": int(ours["skipped_redeliveries"]),
        "connections": connections,
        "gateways": gateways,
        "gap_checker": "on (production defaults)",
        "cpu_s": ours["cpu_s"],
        "cpu_us_per_rating": round(total_cpu / ratings * 1e6, 1),
        # If every core did nothing but this path: the rate its measured CPU cost allows.
        "cpu_bound_per_s": round(cores * ratings / total_cpu, 1),
        "cpu_bound_ratio": round(cores * ratings / total_cpu / b, 3),
        "cores": cores,
        "gateway_published_s": ours["published_s"],
        "setup_s": round(setup_s, 2),
        "not_measured": NOT_MEASURED,
    }


def run_backlog(
    backlog: int = 1_000_000,
    devices: int = 1000,
    halls: int = 10,
    publishers: int = 8,
    gateways: int = 1,
) -> dict[str, Any]:
    """Queue `backlog` ratings in the stopped gateways' sessions, then time their drain.

    With `gateways` > 1 the halls are partitioned (WR_GATEWAY_HALLS), each gateway with its
    own client id and session, as docs/delivery.md describes for scaling out.
    """
    run = Path(tempfile.mkdtemp(prefix="wr-bench-backlog-"))
    max_queued = max(2_000_000, backlog + 10_000)  # the production figure, or more
    broker = Mosquitto(run / "mosquitto", max_queued=max_queued)
    influx = Influxd(run / "influxd")
    gws: list[GatewayProcess] = []
    try:
        t = time.perf_counter()
        broker.start()
        influx.start()
        names = [f"bench-{h:02d}" for h in range(halls)]
        devs = build_payloads(run, backlog, devices, names)
        build_s = time.perf_counter() - t
        for i in range(gateways):
            env = {"WR_GATEWAY_HALLS": ",".join(names[i::gateways])} if gateways > 1 else {}
            gws.append(GatewayProcess(run, broker.port, influx.url, f"bench-gw-{i}", **env))
        for g in gws:
            g.start()
        for g in gws:
            g.wait_subscribed()  # its persistent session and subscriptions now exist
            g.stop()
        publish_s = Publishers(broker.port, devs, publishers).start().wait()
        broker_mb = rss_mb(_pid(broker))
        pids = [_pid(broker), _pid(influx)]
        cpu0 = [cpu_s(p) for p in pids]
        t0 = time.perf_counter()
        for g in gws:
            g.start()
        for g in gws:
            g.wait_subscribed()
        subscribed_s = time.perf_counter() - t0
        gw_pids = [g.proc.pid if g.proc else 0 for g in gws]
        wait_written(gws, backlog, acked=True)
        drained_s = time.perf_counter() - t0
        cpu = {
            "gateway": round(sum(cpu_s(p) for p in gw_pids), 2),
            "mosquitto": round(cpu_s(pids[0]) - cpu0[0], 2),
            "influxd": round(cpu_s(pids[1]) - cpu0[1], 2),
        }
        received = sum(g.metrics().get("windowrate_gateway_link_received_total", 0) for g in gws)
        for g in gws:
            g.stop()
        left = sum(leftover(broker.port, g.client_id) for g in gws)
        points, distinct = stored(influx.url, "windowrate")
    finally:
        for g in gws:
            g.stop()
        influx.stop()
        broker.stop()
        shutil.rmtree(run, ignore_errors=True)
    return {
        "backlog": backlog,
        "devices": devices,
        "halls": halls,
        "drained_s": round(drained_s, 2),
        "ratings_per_s": round(backlog / drained_s, 1),
        "lost": backlog - distinct,
        "duplicates": points - distinct,
        "redelivered": int(received) - backlog,
        "gateways": gateways,
        "left_in_broker_queue": left,
        "gateway_start_to_subscribed_s": round(subscribed_s, 2),
        "cpu_s": cpu,
        "setup": {
            "build_payloads_s": round(build_s, 2),
            "publish_s": round(publish_s, 2),
            "publish_per_s": round(backlog / publish_s, 1),
            "publishers_at_once": publishers,
            "broker_rss_mb_with_backlog": broker_mb,
        },
        "broker": {
            "persistence": True,
            "autosave_interval_s": broker.autosave_s,
            "max_queued_messages": max_queued,
            "max_queued_bytes": "0 (no limit)",
        },
        "timed": "gateway process start → every rating written to InfluxDB and acknowledged",
        "gap_checker": "on (production defaults)",
        "not_measured": NOT_MEASURED,
    }
