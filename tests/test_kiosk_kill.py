"""SIGKILL loops during presses: a real Terminal in a child process is killed again and again
while it takes ratings (some held for their follow-up reasons), restarted each time, and every
committed rating is stored in InfluxDB exactly once, through a real broker and gateway, with
seq 1..n complete.

tests/test_outbox.py kills a bare recorder (no network) and tests/test_fault.py kills a
simulator once among other faults; this one kills the whole terminal, publisher included,
many times, mid-publish and mid-reasons.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from devstack.services import Influxd, Mosquitto, die_with_parent
from gateway.gaps import open_client, scan
from storage.client import InfluxSettings
from tests.support import (
    CHILDREN,
    REPO,
    GatewayProcess,
    distinct_ids,
    influx_query,
    rating_count,
    wait_until,
)

HALL, DEVICE = "kill", "k-0001"
KILLS = 8

CHILD = """
import random, sys, time
from pathlib import Path
from common.mqtt import MqttSettings
from kiosk.core.terminal import Terminal, TerminalSpec
from protocol.messages import DeviceConfig, ReasonOption

data, port, ready, final = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
hall, device = sys.argv[5], sys.argv[6]
config = DeviceConfig(
    window="a12",
    repeat_interval_s=0,
    reasons=[ReasonOption(code="waiting", zh="等候时间长", en="Long wait")],
)
spec = TerminalSpec(
    hall=hall, device=device, data_dir=data, mqtt=MqttSettings(port=port), config=config,
    trust_wall_clock=True,
)
term = Terminal(spec, thanks_s=0.0)
term.start(tick_s=0.02)
ready.touch()
rng = random.Random()
presses = 0
while final == "0" or presses < int(final):
    result = term.press(rng.choice([5, 5, 4, 3, 2, 1]), "touch")
    if result.recorded is not None:
        presses += 1
        sys.stdout.write(f"{result.recorded.seq}\\n")
        sys.stdout.flush()
        if term.session.screen.value == "reasons":  # a low rating: held for its reasons
            time.sleep(rng.uniform(0, 0.01))  # a kill may land while it is held
            term.session.choose_reasons(["waiting"])
    term.session.tick()
    time.sleep(rng.uniform(0, 0.004))
assert term.publisher.wait_drained(120), "not drained"
term.stop()
"""


def run_child(data: Path, port: int, out: Path, ready: Path, final: int) -> subprocess.Popen[bytes]:
    """Start the terminal child; `final` > 0 presses that many, drains and exits."""
    with out.open("ab") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                str(data),
                str(port),
                str(ready),
                str(final),
                HALL,
                DEVICE,
            ],
            stdout=f,
            stderr=subprocess.STDOUT if final else subprocess.DEVNULL,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            preexec_fn=die_with_parent,
        )
    CHILDREN.append(proc)
    return proc


def printed_seqs(out: Path) -> list[int]:
    """Seqs the children printed (a line cut by the kill is dropped)."""
    lines = out.read_text(errors="replace").split("\n")[:-1]
    return [int(x) for x in lines if x.isdigit()]


def test_sigkill_loop_during_presses_stores_each_rating_once(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """Killed 8 times mid-press and restarted: InfluxDB holds seq 1..n, each once."""
    gw = GatewayProcess(tmp_path / "gateway", broker.port, influx.url)
    gw.start()
    data = tmp_path / "kiosk"
    rng = random.Random(20261202)
    killed_with: list[int] = []
    for run in range(KILLS):
        out = tmp_path / f"run-{run}.out"
        ready = tmp_path / f"ready-{run}"
        child = run_child(data, broker.port, out, ready, 0)
        wait_until(lambda: ready.exists() or child.poll() is not None, 30, 0.01, "child ready")  # noqa: B023
        assert child.poll() is None, f"run {run}: the terminal exited"
        time.sleep(rng.uniform(0.3, 1.2))
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
        killed_with.append(len(printed_seqs(out)))
    assert sum(killed_with) > KILLS * 10, f"too few presses before the kills: {killed_with}"

    out = tmp_path / "final.out"
    final = run_child(data, broker.port, out, tmp_path / "ready-final", 20)
    assert final.wait(180) == 0, out.read_text()[-3000:]
    committed = sorted(
        s for run in range(KILLS) for s in printed_seqs(tmp_path / f"run-{run}.out")
    ) + printed_seqs(out)
    assert committed == sorted(set(committed)), "a seq was handed out twice"
    n = max(committed)

    wait_until(lambda: rating_count(influx.url) >= n, 60, 0.3, f"{n} ratings in InfluxDB")
    time.sleep(1.5)  # a double would land now
    assert rating_count(influx.url) == n
    assert distinct_ids(influx.url) == n
    rows = influx_query(influx.url, 'SELECT count("seq"), min("seq"), max("seq") FROM "rating"')
    assert rows[0]["values"][0][1:] == [n, 1, n]
    # Every seq a child saw committed is among them (a kill may cut the line of one more).
    assert set(committed) <= set(range(1, n + 1))
    query = open_client(InfluxSettings(url=influx.url))
    try:
        assert scan(query) == []
    finally:
        query.close()
    m = gw.metrics()
    assert m.get("windowrate_gateway_seq_missing_total", 0) == 0
    gw.stop()
