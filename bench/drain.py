"""Drain a persistent session's backlog: the gateway's link against paho and `mosquitto_sub`.

For each consumer a fresh Mosquitto (persistence on, queue sized for the backlog) gets the
consumer's persistent session (`clean_start=False`, QoS 1 subscription), then N QoS 1
messages from `mosquitto_pub -l` over several connections while the consumer is away. The
timed part starts when the consumer connects and ends when it has every message. Each
consumer does the same nothing: it keeps the payload (to count lost and doubled messages)
and acknowledges it — the link per batch, paho per message (manual ack), `mosquitto_sub` on
its own. The asyncio leg is the same codec on an event loop, the measurement behind the
link's threading model. Run: `python -m bench.drain --messages 100000`; JSON last line.
"""

import argparse
import asyncio
import json
import logging
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mqtt5
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.mqtt import MqttSettings, make_client
from devstack.services import Mosquitto, die_with_parent, require_binary
from gateway.link import ConnectOptions, Link
from gateway.link.frames import parse, pubacks

log = logging.getLogger(__name__)

TOPIC = "wr/v1/+/+/rating"
SESSION_S = 86_400
TIMEOUT_S = 600.0


def build_lines(out: Path, messages: int, publishers: int) -> list[Path]:
    """Write one file of rating-sized JSON lines per publisher; every line is unique."""
    files = []
    for p in range(publishers):
        path = out / f"b-{p:04d}.jsonl"
        with path.open("w") as f:
            for n in range(p, messages, publishers):
                doc = {
                    "v": 1,
                    "id": f"0190f3a2-{n:04x}-7000-8000-000000000000",
                    "device": path.stem,
                    "hall": "bench",
                    "window": "a12",
                    "seq": n + 1,
                    "ts": 1_760_000_000_000 + n,
                    "clock_synced": True,
                    "scale": 5,
                    "level": 1 + n % 5,
                    "input": "touch",
                    "prompted": True,
                    "staff": "0457",
                    "ticket": f"A{n % 10000:04d}",
                    "item": "330100-001",
                    "reasons": [],
                }
                f.write(json.dumps(doc, separators=(",", ":")) + "\n")
        files.append(path)
    return files


def make_session(port: int, client_id: str, receive_max: int) -> None:
    """Create the persistent session with its QoS 1 subscription, then go away."""
    client = make_client(MqttSettings(port=port), client_id, paho_logging=False)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect("127.0.0.1", port, clean_start=False, properties=_props(receive_max))
    client.loop_start()
    client.subscribe(TOPIC, qos=1)
    if not subscribed.wait(30):
        raise RuntimeError("no SUBACK for the bench session")
    client.disconnect()
    client.loop_stop()


def _props(receive_max: int) -> Properties:
    """CONNECT properties of a persistent session."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_S
    props.ReceiveMaximum = receive_max
    return props


def publish(port: int, files: list[Path]) -> None:
    """Publish every line at QoS 1, one `mosquitto_pub -l` per file, and wait for all."""
    pub = require_binary("mosquitto_pub", "mosquitto-clients")
    pub_args = [pub, "-p", str(port), "-V", "mqttv5", "-q", "1", "-M", "100"]
    procs = []
    for path in files:
        topic = f"wr/v1/bench/{path.stem}/rating"
        with path.open("rb") as stdin:
            procs.append(
                subprocess.Popen(
                    [*pub_args, "-i", f"pub-{path.stem}", "-t", topic, "-l"],
                    stdin=stdin,
                    preexec_fn=die_with_parent,
                )
            )
    for p in procs:
        if p.wait(TIMEOUT_S) != 0:
            raise RuntimeError(f"mosquitto_pub exited with {p.returncode}")


def drain_link(port: int, messages: int, receive_max: int) -> tuple[float, list[bytes]]:
    """Our link: take batches, keep payloads, ack each batch in one send."""
    got: list[bytes] = []
    t0 = time.perf_counter()
    link = Link(MqttSettings(port=port), ConnectOptions("drain", (TOPIC,), receive_max, SESSION_S))
    link.start()
    seen: set[bytes] = set()
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while len(seen) < messages and time.monotonic() < deadline:
            batch = link.get(1.0)
            if batch is None:
                continue
            payloads = [m.payload for m in batch.messages]
            got += payloads
            seen.update(payloads)
            link.ack(batch.epoch, batch.packet_ids)
        seconds = time.perf_counter() - t0
    finally:
        link.stop()
    return seconds, got


def drain_paho(port: int, messages: int, receive_max: int) -> tuple[float, list[bytes]]:
    """paho 2 with manual ack: one PUBACK per message, as the gateway did before the link."""
    got: list[bytes] = []
    seen: set[bytes] = set()
    done = threading.Event()
    client = make_client(MqttSettings(port=port), "drain", manual_ack=True, paho_logging=False)

    def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        got.append(payload)
        seen.add(payload)
        c.ack(msg.mid, msg.qos)
        if len(seen) >= messages:
            done.set()

    client.on_message = on_message
    t0 = time.perf_counter()
    client.connect("127.0.0.1", port, clean_start=False, properties=_props(receive_max))
    client.loop_start()
    done.wait(TIMEOUT_S)
    seconds = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return seconds, got


def drain_mosquitto_sub(port: int, messages: int, receive_max: int) -> tuple[float, list[bytes]]:
    """Mosquitto's own C client: the speed of the path itself."""
    sub = require_binary("mosquitto_sub", "mosquitto-clients")
    cmd = [sub, "-p", str(port), "-V", "mqttv5", "-q", "1", "-c", "-x", str(SESSION_S)]
    cmd += ["-D", "connect", "receive-maximum", str(receive_max)]
    cmd += ["-i", "drain", "-t", TOPIC, "-C", str(messages), "-W", str(int(TIMEOUT_S))]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, preexec_fn=die_with_parent, check=False)
    seconds = time.perf_counter() - t0
    return seconds, out.stdout.splitlines()


class _AsyncDrain(asyncio.Protocol):
    """The link's codec on an event loop: parse each read, ack it in one write."""

    def __init__(self, messages: int, receive_max: int, done: asyncio.Future[None]) -> None:
        """Count towards `messages`; resolve `done` when all arrived."""
        self.messages, self.receive_max, self.done = messages, receive_max, done
        self.got: list[bytes] = []
        self.seen: set[bytes] = set()
        self.rest = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send CONNECT and SUBSCRIBE."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        connect = mqtt5.ConnectPacket(
            "drain", session_expiry_interval=SESSION_S, receive_max=self.receive_max
        )
        transport.write(connect.write())

    def data_received(self, data: bytes) -> None:
        """Parse every packet, keep the payloads, ack them all."""
        assert self.transport is not None
        data = self.rest + data if self.rest else data
        msgs, _others, used = parse(memoryview(data), 1 << 22)
        self.rest = data[used:]
        if msgs:
            payloads = [m.payload for m in msgs]
            self.got += payloads
            self.seen.update(payloads)
            self.transport.write(pubacks([m.packet_id for m in msgs]))
            if len(self.seen) >= self.messages and not self.done.done():
                self.done.set_result(None)


def drain_asyncio(port: int, messages: int, receive_max: int) -> tuple[float, list[bytes]]:
    """The same codec in an asyncio Protocol (the alternative to the link's thread)."""

    async def go() -> tuple[float, list[bytes]]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        proto = _AsyncDrain(messages, receive_max, done)
        t0 = time.perf_counter()
        transport, _ = await loop.create_connection(lambda: proto, "127.0.0.1", port)
        await asyncio.wait_for(done, TIMEOUT_S)
        seconds = time.perf_counter() - t0
        transport.close()
        return seconds, proto.got

    return asyncio.run(go())


Drain = Callable[[int, int, int], tuple[float, list[bytes]]]
LEGS: dict[str, Drain] = {
    "link": drain_link,
    "paho": drain_paho,
    "mosquitto_sub": drain_mosquitto_sub,
    "asyncio": drain_asyncio,
}


def leg(run: Path, name: str, files: list[Path], messages: int, receive_max: int) -> dict[str, Any]:
    """One consumer on a fresh broker and a fresh backlog; its rate, lost and doubled."""
    broker = Mosquitto(run / f"mosquitto-{name}", max_queued=messages + 1000)
    try:
        broker.start()
        make_session(broker.port, "drain", receive_max)
        publish(broker.port, files)
        seconds, got = LEGS[name](broker.port, messages, receive_max)
    finally:
        broker.stop()
    distinct = len(set(got))
    return {
        "per_s": round(messages / seconds, 1),
        "lost": messages - distinct,
        "duplicates": len(got) - distinct,
    }


def run(messages: int, publishers: int = 4, receive_max: int = 20_000) -> dict[str, Any]:
    """Drain the same backlog with each consumer; return the result row."""
    work = Path(tempfile.mkdtemp(prefix="wr-bench-drain-"))
    try:
        files = build_lines(work, messages, publishers)
        legs = {name: leg(work, name, files, messages, receive_max) for name in LEGS}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours, c = legs["link"], legs["mosquitto_sub"]
    return {
        "messages": messages,
        "receive_max": receive_max,
        "link_per_s": ours["per_s"],
        "paho_per_s": legs["paho"]["per_s"],
        "mosquitto_sub_per_s": c["per_s"],
        "asyncio_per_s": legs["asyncio"]["per_s"],
        "ratio": round(ours["per_s"] / c["per_s"], 3),
        "lost": {k: v["lost"] for k, v in legs.items()},
        "duplicates": {k: v["duplicates"] for k, v in legs.items()},
    }


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run, print the JSON row last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--receive-max", type=int, default=20_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run(args.messages, args.publishers, args.receive_max)))


if __name__ == "__main__":
    main()
