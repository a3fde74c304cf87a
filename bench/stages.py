"""Per-rating cost of each gateway stage, before and after the fast path, in one run.

One rating's way through the gateway: receive (the link's `mqtt5` frame parse of a prepared
byte stream, in reads of the link's size), decode (topic parse + JSON parse), validate (the
model rules), line protocol, write (InfluxDB HTTP to a real influxd, batches of the
gateway's 5,000 points) and ack (the PUBACKs of a batch encoded as one buffer). "before" is
the decode and line builder as they were (`protocol.decode.decode_reference` and
`rating_line_before` below), "after" what the gateway runs now; both run on the same
ratings in the same process, interleaved round by round, and must give the same output.
Run: `python -m bench.stages --ratings 100000`; the JSON result is the last line.
"""

import argparse
import json
import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mqtt5
import orjson
import pydantic_core
from pydantic import TypeAdapter

from devstack.services import Influxd
from gateway.link.connection import RECV_BYTES
from gateway.link.frames import parse, pubacks
from protocol.decode import Decoded, decode, decode_reference, parse_topic
from protocol.messages import RatingEvent
from storage.client import InfluxClient, InfluxSettings
from storage.lineproto import rating_line
from storage.schema import MEASUREMENT_RATING, rating_time_ns

log = logging.getLogger(__name__)

DEVICES = 1000
BATCH = 5000  # the gateway's default batch.max_points
MAX_PACKET = 4 << 20  # the link's default max_packet_size
DATABASE = "stages"


def _tag(value: str) -> str:
    """Escape a tag value (the line builder before: every tag escaped)."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _str(value: str) -> str:
    """Quote and escape a string field value."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rating_line_before(ev: RatingEvent) -> str:
    """`storage.lineproto.rating_line` as it was before the fast path: the baseline."""
    fields = [
        f"seq={ev.seq}i",
        f"id={_str(str(ev.id))}",
        f"scale={ev.scale}i",
        f"input={_str(ev.input)}",
        f"prompted={'true' if ev.prompted else 'false'}",
        f"clock_synced={'true' if ev.clock_synced else 'false'}",
    ]
    for name in ("staff", "ticket", "item"):
        value = getattr(ev, name)
        if value is not None:
            fields.append(f"{name}={_str(value)}")
    if ev.reasons:
        fields.append(f"reasons={_str(','.join(ev.reasons))}")
    if ev.project is not None:
        fields.append(f"project={_str(ev.project)}")
    return (
        f"{MEASUREMENT_RATING},device={_tag(ev.device)},hall={_tag(ev.hall)},level={ev.level},"
        f"window={_tag(ev.window)} {','.join(fields)} {rating_time_ns(ev.ts, ev.seq)}"
    )


def messages(n: int, now_ms: int) -> list[tuple[str, bytes]]:
    """`n` valid ratings of DEVICES devices as (topic, compact JSON), as a kiosk sends them."""
    out = []
    for i in range(n):
        device = f"k-{i % DEVICES:04d}"
        level = i % 5 + 1
        doc: dict[str, Any] = {
            "v": 1,
            "id": str(uuid.UUID(int=(i + 1) * 0x9E3779B97F4A7C15 % (1 << 122), version=4)),
            "device": device,
            "hall": "bench",
            "window": f"a{i % DEVICES % 40}",
            "seq": i // DEVICES + 1,
            "ts": now_ms - 3_600_000 + i // DEVICES,
            "clock_synced": True,
            "scale": 5,
            "level": level,
            "input": "touch",
            "prompted": i % 2 == 0,
            "staff": f"{i % 300:04d}",
            "ticket": f"A{i % 10000:04d}",
            "item": "330100-001",
            "reasons": ["waiting", "attitude"] if level <= 2 else [],
        }
        if i % 4 == 0:
            doc["project"] = f"330100{i:012d}"
        out.append((f"wr/v1/bench/{device}/rating", orjson.dumps(doc)))
    return out


def _rounds(fns: dict[str, Callable[[], object]], rounds: int, n: int) -> dict[str, list[float]]:
    """Run each fn `rounds` times, interleaved; return µs per rating of every round."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            out[name].append((time.perf_counter() - started) / n * 1e6)
    return out


def _receive(stream: bytes, n: int) -> Callable[[], object]:
    """The link's read loop without the socket: parse each read after the bytes kept."""

    def go() -> int:
        rest = b""
        got = 0
        for start in range(0, len(stream), RECV_BYTES):
            data = (
                rest + stream[start : start + RECV_BYTES]
                if rest
                else stream[start : start + RECV_BYTES]
            )
            msgs, _others, used = parse(memoryview(data), MAX_PACKET)
            rest = data[used:]
            got += len(msgs)
        if got != n or rest:
            raise RuntimeError(f"parsed {got} of {n} messages, {len(rest)} bytes left")
        return got

    return go


def _decode_only(msgs: list[tuple[str, bytes]]) -> Callable[[], object]:
    """Topic parse (cold cache) + JSON parse with the parser pydantic-core validates with."""

    def go() -> None:
        parse_topic.cache_clear()
        from_json = pydantic_core.from_json
        for topic, payload in msgs:
            parse_topic(topic, "wr")
            from_json(payload)

    return go


def _decoder(
    fn: Callable[..., object], msgs: list[tuple[str, bytes]], now_ms: int
) -> Callable[[], object]:
    """The whole decode (topic, JSON, rules, topic match, time check), cold topic cache."""

    def go() -> None:
        parse_topic.cache_clear()
        for topic, payload in msgs:
            fn(topic, payload, now_ms)

    return go


def _each(fn: Callable[[Any], object], items: list[Any]) -> Callable[[], object]:
    """Call fn on every item."""

    def go() -> None:
        for item in items:
            fn(item)

    return go


def _candidates(msgs: list[tuple[str, bytes]], rounds: int) -> dict[str, float]:
    """Ways to turn a payload into a RatingEvent; µs per rating (median of rounds)."""
    payloads = [p for _t, p in msgs]
    adapter = TypeAdapter(RatingEvent)
    validator = RatingEvent.__pydantic_validator__

    def construct(payload: bytes) -> RatingEvent:
        """No rule checked at all: the floor of any hand-checked Python path."""
        doc = orjson.loads(payload)
        doc["id"] = uuid.UUID(doc["id"])
        return RatingEvent.model_construct(**doc)

    fns = {
        "model_validate_json": _each(RatingEvent.model_validate_json, payloads),
        "validator_validate_json": _each(validator.validate_json, payloads),
        "type_adapter_validate_json": _each(adapter.validate_json, payloads),
        "orjson_model_construct_unchecked": _each(construct, payloads),
    }
    return {
        k: round(statistics.median(v), 3) for k, v in _rounds(fns, rounds, len(payloads)).items()
    }


def _write(url: str, lines: list[str]) -> dict[str, Any]:
    """Write every line in gateway-sized batches to a fresh database; time it; count stored."""
    settings = InfluxSettings(url=url, database=DATABASE, timeout_s=120)
    with InfluxClient(settings) as client:
        client.query(f'DROP DATABASE "{DATABASE}"')
        started = time.perf_counter()
        client.create_database()
        setup_s = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(0, len(lines), BATCH):
            client.write(lines[i : i + BATCH])
        seconds = time.perf_counter() - started
        rows = list(client.rows(f'SELECT count("seq") FROM "{MEASUREMENT_RATING}"'))
    stored = int(rows[0]["count"]) if rows else 0
    return {"seconds": seconds, "create_database_s": round(setup_s, 3), "stored": stored}


def run(n: int = 100_000, rounds: int = 5, influx_url: str | None = None) -> dict[str, Any]:
    """Measure every stage before and after on `n` ratings; write to `influx_url` or own influxd."""
    now_ms = time.time_ns() // 1_000_000
    started = time.perf_counter()
    msgs = messages(n, now_ms)
    stream = b"".join(
        mqtt5.PublishPacket(
            topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=i % 65_535 + 1
        ).write()
        for i, (topic, payload) in enumerate(msgs)
    )
    before_res = [decode_reference(t, p, now_ms) for t, p in msgs]
    after_res = [decode(t, p, now_ms) for t, p in msgs]
    events = [r.message for r in after_res if isinstance(r, Decoded)]
    assert all(isinstance(e, RatingEvent) for e in events)
    ratings: list[RatingEvent] = events  # type: ignore[assignment]
    lines = [rating_line(ev) for ev in ratings]
    same = before_res == after_res and lines == [rating_line_before(ev) for ev in ratings]
    ids = [i % 65_535 + 1 for i in range(n)]
    batches = [ids[i : i + BATCH] for i in range(0, n, BATCH)]
    prep_s = time.perf_counter() - started

    cpu = _rounds(
        {
            "receive": _receive(stream, n),
            "decode": _decode_only(msgs),
            "decode_validate_before": _decoder(decode_reference, msgs, now_ms),
            "decode_validate_after": _decoder(decode, msgs, now_ms),
            "line_before": _each(rating_line_before, ratings),
            "line_after": _each(rating_line, ratings),
            "ack": _each(pubacks, batches),
        },
        rounds,
        n,
    )
    med = {k: statistics.median(v) for k, v in cpu.items()}
    spread = {k: round(max(v) / min(v), 2) for k, v in cpu.items()}
    candidates = _candidates(msgs[: min(n, 20_000)], rounds)

    influx_setup_s = 0.0
    if influx_url is None:
        with tempfile.TemporaryDirectory(prefix="wr-stages-") as tmp:
            influxd = Influxd(Path(tmp) / "influxd")
            t0 = time.perf_counter()
            influxd.start()
            influx_setup_s = time.perf_counter() - t0
            try:
                written = _write(influxd.url, lines)
            finally:
                influxd.stop()
    else:
        written = _write(influx_url, lines)
    write_us = written["seconds"] / n * 1e6

    def table(side: str) -> dict[str, float]:
        validate = med[f"decode_validate_{side}"] - med["decode"]
        row = {
            "receive": med["receive"],
            "decode": med["decode"],
            "validate": validate,
            "line": med[f"line_{side}"],
            "write": write_us,
            "ack": med["ack"],
        }
        row["total"] = sum(row.values())
        return {k: round(v, 3) for k, v in row.items()}

    before, after = table("before"), table("after")
    gateway_cpu = {
        s: round(sum(t[k] for k in t if k not in ("write", "total")), 3)
        for s, t in (("before", before), ("after", after))
    }
    return {
        "bench": "stages",
        "ratings": n,
        "rounds": rounds,
        "figure": "median µs per rating over the rounds, before/after interleaved in one run",
        "us_per_rating_before": before,
        "us_per_rating_after": after,
        "ratings_per_s_before": round(1e6 / before["total"]),
        "ratings_per_s_after": round(1e6 / after["total"]),
        "gateway_cpu_us_before": gateway_cpu["before"],
        "gateway_cpu_us_after": gateway_cpu["after"],
        "round_spread_max_over_min": spread,
        "validate_candidates_us": candidates,
        "same_output": same,
        "accepted": len(ratings),
        "stored": written["stored"],
        "write_seconds": round(written["seconds"], 3),
        "setup_s": {
            "prepare_ratings_and_stream": round(prep_s, 3),
            "influxd_start": round(influx_setup_s, 3),
            "create_database": written["create_database_s"],
        },
        "notes": (
            "validate = whole decode minus decode (topic + JSON parse to Python objects, which"
            " costs more than pydantic-core's own parse, so validate is if anything low);"
            " write is measured once (the same lines before and after), influxd on the same"
            " 2 cores; not measured: socket recv/send, the gateway's duplicate and time-slot"
            " bookkeeping, dead letters, metrics"
        ),
    }


def main() -> None:
    """Parse arguments, run, print the per-stage table and the JSON result last."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ratings", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--influx-url", default=None, help="an InfluxDB 1.x to write to (a test one)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = run(args.ratings, args.rounds, args.influx_url)
    b, a = result["us_per_rating_before"], result["us_per_rating_after"]
    print(f"{'stage':10s} {'before µs':>10s} {'after µs':>10s}")
    for stage in b:
        print(f"{stage:10s} {b[stage]:10.3f} {a[stage]:10.3f}")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
