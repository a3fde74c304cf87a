"""Generated hostile payloads on every consumed topic: never a crash, always a reason.

The in-process properties call the exact functions the consumers run on each message:
the gateway's `decode`, the server link's `_on_message` and the kiosk publisher's
`_on_message` (unwrapped from `guarded`, so an unexpected exception fails the test).
The end-to-end test sends hostile messages through a real Mosquitto to a real gateway.
"""

import json
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from common.mqtt import MqttSettings
from devstack.services import Influxd, Mosquitto
from gateway.points import Accepted, point_of
from kiosk.core.publisher import Publisher
from kiosk.core.session import Screen
from kiosk.core.terminal import Terminal
from kiosk.settings import KioskSettings
from protocol.decode import (
    MAX_TOPIC_CHARS,
    Decoded,
    Rejection,
    decode_reference,
    parse_topic,
    schema_reason,
)
from protocol.messages import (
    Command,
    DeviceConfig,
    DeviceStatus,
    RatingEvent,
    ServiceEvent,
)
from protocol.topics import Topic, TopicError, TopicKind
from server.live.mqttlink import DROPPED, MqttLink
from tests.support import (
    GatewayProcess,
    distinct_ids,
    influx_query,
    rating_count,
    rating_doc,
    raw_client,
    wait_until,
)

HALL, DEVICE, PREFIX = "hz-civic", "k-0001", "wr"
MAX_BYTES = 65_536  # the gateway's default max_payload_bytes and the server link's limit
BASE_TS = 1_763_880_000_123  # a press time in the past and after 2020: plausible for ever
FAR_FUTURE_TS = 4_000_000_000_000  # 2096: always more than 5 minutes ahead

GATEWAY_REASONS = {
    "bad_json",
    "unknown_key",
    "missing_key",
    "level_out_of_scale",
    "invalid_field",
    "too_large",
    "bad_topic",
    "topic_mismatch",
    "ts_before_2020",
    "ts_in_future",
}
# Reasons the server link must have given in its run (it decodes as the gateway does).
SERVER_REASONS = {"bad_topic", "too_large", "topic_mismatch", "bad_json", "ts_before_2020"}
KIOSK_IGNORED = "ignored invalid message on %s: %s"
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)

# --- hostile values ---

TRICKY_TEXT = [
    'a"b',
    "back\\",
    "\\",
    '\\"',
    "x,y=z w",
    "中文窗口",
    "😀",
    "\u2028",
    "\u00a0",
    "é",
    "'",
    " leading",
    "trailing ",
    "=",
    "#",
    "+",
    "a" * 64,
    "ü" * 64,
    "\ufeffbom",
    "null",
]
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "\n",
    "\x7f",
    "\ud800",
    "\udfff",
    "a" * 65,
    "A" * 70,
    "x" * 5000,
    "../..",
    "+",
    "#",
    "true",
    "5",
    "１２",
    "k-0001\n",
    "00000000-0000-0000-0000-00000000000g",
    "NaN",
]
ODD_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    2**31,
    2**53,
    2**63,
    2**64,
    10**14,
    10**100,
    -(10**100),
    FAR_FUTURE_TS,
    1_577_836_799_999,
    float("nan"),
    float("inf"),
    float("-inf"),
    1e308,
    -0.0,
    5.0,
    1.5,
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from(ODD_NUMBERS),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(ODD_STRINGS + TRICKY_TEXT),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    """A list nested `depth` deep."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# --- valid documents of each model, to be mutated ---

ids = st.sampled_from([HALL, DEVICE, "other-hall", "k-9999", "a", "0" * 64])
TEXTS: list[str | None] = [None, *TRICKY_TEXT, "0457", "A0123"]
WINDOWS = ["a12", "A", "b.1-x_2", "z" * 32]


def _variants(kind: TopicKind, n: int = 60) -> list[dict[str, Any]]:
    """`n` valid documents of `kind` for HALL/DEVICE (without id, seq and ts), seeded."""
    rnd = random.Random(f"fuzz-{kind.value}")
    out: list[dict[str, Any]] = []
    for _ in range(n):
        text = {k: rnd.choice(TEXTS) for k in ("staff", "ticket", "item")}
        window = rnd.choice(WINDOWS)
        if kind is TopicKind.RATING:
            scale = rnd.choice([3, 4, 5])
            doc: dict[str, Any] = {
                "v": 1,
                "device": DEVICE,
                "hall": HALL,
                "window": window,
                "clock_synced": rnd.random() < 0.5,
                "scale": scale,
                "level": rnd.randint(1, scale),
                "input": rnd.choice(["touch", "button", "serial"]),
                "prompted": rnd.random() < 0.5,
                **text,
                "reasons": rnd.sample(["waiting", "attitude", "x-repeat"], rnd.randint(0, 3)),
            }
        elif kind is TopicKind.EVENT:
            doc = {
                "v": 1,
                "device": DEVICE,
                "hall": HALL,
                "window": rnd.choice([None, window]),
                "clock_synced": rnd.random() < 0.5,
                "type": rnd.choice(["staff_login", "prompt_shown", "pause", "resume"]),
                **text,
            }
        elif kind is TopicKind.STATUS:
            doc = {
                "v": 1,
                "device": DEVICE,
                "hall": HALL,
                "state": rnd.choice(["online", "paused", "offline"]),
            }
            if rnd.random() < 0.7:
                doc.update(
                    window=window,
                    last_seq=rnd.randint(0, 10**6),
                    backlog=rnd.randint(0, 10**6),
                    clock_synced=rnd.random() < 0.5,
                    version="0.1.0",
                    board={"connected": rnd.random() < 0.5, "id": text["staff"], "buttons": 5},
                )
        elif kind is TopicKind.CONFIG:
            doc = {
                "v": 1,
                "window": window,
                "window_name": text["item"],
                "scale": rnd.choice([3, 4, 5]),
                "language": rnd.choice(["zh", "en"]),
                "prompt_mode": rnd.choice(["always", "per_service"]),
                "repeat_interval_s": rnd.randint(0, 3600),
                "prompt_timeout_s": rnd.randint(5, 600),
                "reasons": [{"code": "waiting", "zh": "等候时间长", "en": "Long wait"}],
                "staff": [{"staff": "0457", "name": rnd.choice(TRICKY_TEXT)}],
                "test_device": rnd.random() < 0.5,
            }
        else:
            doc = {"v": 1, "cmd": rnd.choice(["prompt", "pause", "resume", "identify"]), **text}
        out.append(doc)
    return out


@st.composite
def valid_docs(draw: st.DrawFn, kind: TopicKind) -> dict[str, Any]:
    """A valid document of `kind`: a seeded variant with a drawn id, seq and press time."""
    doc = dict(draw(st.sampled_from(_variants(kind))))
    if kind in (TopicKind.RATING, TopicKind.EVENT, TopicKind.CMD):
        doc["id"] = str(draw(st.uuids()))
        doc["ts"] = BASE_TS + draw(st.integers(0, 10**9))
    if kind is TopicKind.RATING:
        doc["seq"] = draw(st.integers(1, 2**53 - 1))
    if kind is TopicKind.STATUS and "window" in doc:
        doc["ts"] = BASE_TS
    return doc


DOC_STRATEGIES = {kind: valid_docs(kind) for kind in TopicKind}
MODELS: dict[TopicKind, type[BaseModel]] = {
    TopicKind.RATING: RatingEvent,
    TopicKind.EVENT: ServiceEvent,
    TopicKind.STATUS: DeviceStatus,
    TopicKind.CONFIG: DeviceConfig,
    TopicKind.CMD: Command,
}
NESTED_KEYS = st.sampled_from(["board", "reasons", "staff"])
FIELD_KEYS = {kind: st.sampled_from(sorted(model.model_fields)) for kind, model in MODELS.items()}
UNKNOWN_KEYS = st.text(min_size=1, max_size=12) | st.sampled_from(["__proto__", "V", "level "])
# Values at and just past the edge of each field's range.
EDGES: dict[str, list[Any]] = {
    "v": [0, 2, True, 1.0, "1"],
    "level": [0, 4, 5, 6, 7, -1, True],
    "scale": [2, 3, 4, 6, 5.0],
    "ts": [0, 1_577_836_799_999, FAR_FUTURE_TS, 10**14 - 1, 10**14],
    "seq": [0, 2**53 - 1, 2**53],
    "id": ["{6f1e2d3c-4b5a-4f70-9e1e-2d3c4b5a6f70}", "6f1e2d3c4b5a4f709e1e2d3c4b5a6f7", "x"],
    "device": ["k-9999", "K-0001", ""],
    "hall": ["other-hall", "hz_civic ", "a" * 65],
    "window": ["", "a" * 33, "-a"],
    "state": ["ONLINE", "gone"],
    "buttons": [0, 9],
    "prompt_timeout_s": [4, 601],
    "repeat_interval_s": [-1, 3601],
    "version": ["1.0\n", "\x00", "", "\r", "v" * 33],
    "staff": ["\n", "a\tb", "\x7f", "x" * 65, ""],
}
EDGE_VALUES = st.sampled_from([(k, v) for k, vs in EDGES.items() for v in vs])
INNER_VALUES = st.lists(
    st.dictionaries(
        st.sampled_from(["code", "zh", "en", "staff", "name", "connected", "id", "buttons", "x"]),
        json_values,
        max_size=4,
    ),
    max_size=3,
) | st.dictionaries(
    st.sampled_from(["connected", "id", "buttons", "firmware", "y"]), json_values, max_size=4
)
# Out of range but well typed: what the gateway must tell apart (time, level) from bad input.
RANGE_VALUES = st.sampled_from(
    [("ts", 1_577_836_799_999), ("ts", FAR_FUTURE_TS), ("ts", 0), ("level", 0), ("level", 4)]
)
OPS = st.sampled_from(["set", "set", "edge", "edge", "range", "drop", "extra", "nest", "inner"])


@st.composite
def mutated_docs(draw: st.DrawFn, kind: TopicKind) -> dict[str, Any]:
    """A valid document of `kind` with zero to three fields dropped, added or made hostile."""
    doc = draw(DOC_STRATEGIES[kind])
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 3]))):
        op = draw(OPS)
        key = draw(FIELD_KEYS[kind])
        if op == "set":
            doc[key] = draw(json_values)
        elif op in ("edge", "range"):
            edge_key, value = draw(EDGE_VALUES if op == "edge" else RANGE_VALUES)
            doc[edge_key] = value
        elif op == "drop":
            doc.pop(key, None)
        elif op == "extra":
            doc[draw(UNKNOWN_KEYS)] = draw(json_values)
        elif op == "nest":
            doc[key] = nested(draw(st.integers(1, 400)))
        else:  # hostile values inside the nested objects and lists
            doc[draw(NESTED_KEYS)] = draw(INNER_VALUES)
    return doc


@st.composite
def encoded(draw: st.DrawFn, doc: Any) -> bytes:
    """Serialise a document as JSON: ASCII escapes, raw UTF-8, or with lone surrogates raw."""
    how = draw(st.sampled_from(["ascii", "utf8", "raw", "spaced"]))
    if how == "ascii":
        return json.dumps(doc).encode()
    if how == "spaced":
        return json.dumps(doc, indent=2).encode() + b"\r\n"
    text = json.dumps(doc, ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass" if how == "raw" else "replace")


@st.composite
def corrupted(draw: st.DrawFn, data: bytes) -> bytes:
    """Valid bytes cut short, with a byte flipped, framed with junk or re-encoded."""
    how = draw(st.sampled_from(["cut", "flip", "prefix", "suffix", "utf16", "twice"]))
    if how == "cut":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if how == "flip":
        i = draw(st.integers(0, max(0, len(data) - 1)))
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    if how == "prefix":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"\x00", b"\xff", b"[", b" "])) + data
    if how == "suffix":
        return data + draw(st.sampled_from([b"\x00", b"\xff", b"x", b"}", b",", b"\n{}"]))
    if how == "utf16":
        return data.decode("utf-8", "replace").encode("utf-16")
    return data + data


# Fixed raw payloads (tests/test_decode_equivalence.py runs each one).
RAW_SAMPLES = [
    b"",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b'"rating"',
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"123456789012345678901234567890123456789",
    b'{"v": NaN}',
    b'{"v": 1, "v": 1}',
    b'"\\ud800"',
    b"\xff\xfe\x00{",
]
raw_payloads = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=1, max_size=100).map(lambda b: b"\xc3" + b + b"\xed\xa0\x80"),
    st.sampled_from(RAW_SAMPLES),
    st.integers(1, 30_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 10_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(MAX_BYTES - 20, MAX_BYTES + 5000).map(
        lambda n: b'{"v":1,"pad":"' + b"x" * n + b'"}'
    ),
    json_values.flatmap(encoded),
)


def _payloads(kind: TopicKind) -> st.SearchStrategy[bytes]:
    """Hostile payloads for a topic of `kind`: mostly near-valid documents of that kind."""
    own = mutated_docs(kind).flatmap(encoded)
    others = st.sampled_from(list(TopicKind)).flatmap(mutated_docs).flatmap(encoded)
    broken = own.flatmap(corrupted)
    # one_of would merge repeated branches: weight by a drawn number instead.
    return st.integers(0, 9).flatmap(
        lambda pick: (
            own if pick < 6 else broken if pick < 8 else others if pick < 9 else raw_payloads
        )
    )


PAYLOADS = {kind: _payloads(kind) for kind in TopicKind}


# --- topics ---

segments = st.one_of(
    ids,
    st.sampled_from(["", "+", "#", "Hz-Civic", "a" * 65, "k 1", "k/1", "$SYS", "k\x00", "é", "😀"]),
    st.text(max_size=70),
)
WHOLE_TOPICS = [
    "",
    "/",
    "#",
    "+/+/+/+/+",
    "wr",
    "wr/v1",
    "wr/v1/",
    "wr/v2/hz-civic/k-0001/rating",
    "WR/v1/hz-civic/k-0001/rating",
    "/wr/v1/hz-civic/k-0001/rating",
    "wr/v1/hz-civic/k-0001/rating/",
    "wr/v1/hz-civic/k-0001/rating/extra",
    "wr/v1/hz-civic/k-0001",
    "wr/v1/hz-civic/k-0001/RATING",
    "wr/v1/hz-civic/k-0001/ratings",
    "$SYS/broker/uptime",
    "wr//v1/hz-civic/k-0001/rating",
    "wr/v1/hz-civic/k-0001/" + "x" * 70_000,
]
whole_topics = st.sampled_from(WHOLE_TOPICS)


HOSTILE_TOPICS = st.builds(
    lambda h, d, k: f"{PREFIX}/v1/{h}/{d}/{k}",
    segments,
    segments,
    st.sampled_from([k.value for k in TopicKind]) | st.text(max_size=10),
)
OTHER_DEVICES = st.tuples(ids, ids)


@st.composite
def topics(draw: st.DrawFn, kind: TopicKind) -> str:
    """Mostly the device's own topic of `kind`; else another device's, a hostile one or junk."""
    pick = draw(st.integers(0, 9))
    if pick < 6:
        return f"{PREFIX}/v1/{HALL}/{DEVICE}/{kind.value}"
    if pick == 6:
        hall, device = draw(OTHER_DEVICES)
        return f"{PREFIX}/v1/{hall}/{device}/{kind.value}"
    if pick == 7:
        return draw(HOSTILE_TOPICS)
    if pick == 8:
        return draw(whole_topics)
    return draw(st.text(max_size=100))


@st.composite
def messages(draw: st.DrawFn, kinds: list[TopicKind]) -> tuple[str, bytes]:
    """A topic among `kinds` (or a hostile one) and a hostile payload for it."""
    kind = draw(st.sampled_from(kinds))
    return draw(topics(kind)), draw(PAYLOADS[kind])


def as_message(topic: str | bytes, payload: bytes) -> mqtt.MQTTMessage:
    """A paho message as the network thread hands it to on_message."""
    raw = topic if isinstance(topic, bytes) else topic.encode("utf-8", "surrogatepass")
    msg = mqtt.MQTTMessage(mid=1, topic=raw)
    msg.payload = payload
    msg.qos = 1
    return msg


undecodable_topics = st.sampled_from(
    [b"wr/v1/hz-civic/k-0001/\xffrating", b"wr/v1/\xc3/k-0001/config", b"\xed\xa0\x80"]
)


class Records(logging.Handler):
    """Keep the log records of one logger while a test runs."""

    def __init__(self) -> None:
        """Start empty."""
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record."""
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        """Return and forget the records so far."""
        out, self.records = self.records, []
        return out


@pytest.fixture
def records() -> Iterator[Callable[[str], Records]]:
    """Attach a Records handler to named loggers; detach afterwards."""
    attached: list[tuple[logging.Logger, Records]] = []

    def attach(name: str) -> Records:
        logger = logging.getLogger(name)
        handler = Records()
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        attached.append((logger, handler))
        return handler

    yield attach
    for logger, handler in attached:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def report(name: str, counts: Counter[str], record_property: Callable[[str, Any], None]) -> None:
    """Print and record the outcome counts of one property test."""
    record_property(f"{name}_outcomes", dict(counts))
    print(json.dumps({"fuzz": name, "examples": sum(counts.values()), **dict(counts)}))


# --- in-process properties ---


def test_gateway_decode_rejects_each_hostile_message_with_a_reason(
    record_property: Callable[[str, Any], None],
) -> None:
    """The gateway's decode: a valid point or a known reason, never an exception."""
    counts: Counter[str] = Counter()
    consumed = [TopicKind.RATING, TopicKind.EVENT, TopicKind.STATUS]

    @settings(FUZZ, max_examples=4500)
    @given(messages([*consumed, *consumed, TopicKind.CONFIG]))
    def check(msg: tuple[str, bytes]) -> None:
        topic, payload = msg
        now = time.time_ns() // 1_000_000
        res = point_of(topic, payload, prefix=PREFIX, max_bytes=MAX_BYTES, now_ms=now)
        # The reference decode (model_validate_json, the path before the fast one) must give
        # the same verdict on this corpus (tests/test_decode_equivalence.py: the others).
        old = decode_reference(topic, payload, now, prefix=PREFIX, max_bytes=MAX_BYTES)
        if isinstance(res, Rejection):
            assert res.reason in GATEWAY_REASONS, res
            assert res.detail and len(res.detail) <= 1000
            assert isinstance(old, Rejection) and (old.reason, old.detail) == (
                res.reason,
                res.detail,
            ), (topic, payload)
            counts[res.reason] += 1
            return
        assert isinstance(res, Accepted)
        t = Topic.parse(topic, PREFIX)
        assert t.kind in consumed and str(t) == topic
        doc = MODELS[t.kind].model_validate_json(payload)
        assert isinstance(old, Decoded) and old.message == doc and old.topic == t, (topic, payload)
        assert (doc.hall, doc.device) == (t.hall, t.device)
        assert not CONTROL.search(res.line), res.line  # one line, no control characters
        assert res.line.startswith(
            {"rating": "rating,", "event": "event,", "status": "device_status,"}[t.kind.value]
        )
        if t.kind is TopicKind.RATING:
            assert res.rating == doc
        counts[f"accepted_{t.kind.value}"] += 1

    check()
    report("gateway", counts, record_property)
    assert sum(counts.values()) >= 4500
    assert set(counts) >= GATEWAY_REASONS, (
        f"reasons never produced: {GATEWAY_REASONS - set(counts)}"
    )
    assert {"accepted_rating", "accepted_event", "accepted_status"} <= set(counts)


@pytest.mark.parametrize("version", ["1.0\n", "\x00", "\r", ""])
def test_status_version_with_control_characters_is_rejected(version: str) -> None:
    """Found by the fuzzer: a status `version` with a newline was stored as it came."""
    doc = {"v": 1, "device": DEVICE, "hall": HALL, "state": "online", "version": version}
    res = point_of(
        f"{PREFIX}/v1/{HALL}/{DEVICE}/status",
        json.dumps(doc).encode(),
        prefix=PREFIX,
        max_bytes=MAX_BYTES,
    )
    assert isinstance(res, Rejection) and res.reason == "invalid_field", res


def test_long_hostile_topics_do_not_fill_the_gateway_topic_cache() -> None:
    """Found by review of the fuzz runs: each unique 64 KiB topic was kept in the parse cache."""
    payload = json.dumps(rating_doc(HALL, DEVICE, 1)).encode()
    parse_topic.cache_clear()
    for i in range(50):
        topic = f"{PREFIX}/v1/{HALL}/{'x' * 60_000}{i}/rating"
        res = point_of(topic, payload, prefix=PREFIX, max_bytes=MAX_BYTES)
        assert isinstance(res, Rejection) and res.reason == "bad_topic"
    assert parse_topic.cache_info().currsize == 0
    longest = f"{'p' * 64}/v1/{'h' * 64}/{'d' * 64}/status"
    assert len(longest) <= MAX_TOPIC_CHARS
    assert Topic.parse(longest, "p" * 64).kind is TopicKind.STATUS


def test_server_link_drops_each_hostile_message_with_a_reason(
    record_property: Callable[[str, Any], None], records: Callable[[str], Records]
) -> None:
    """The server's MQTT link: a valid model handed on, or dropped with a logged reason."""
    counts: Counter[str] = Counter()
    heard: list[RatingEvent | ServiceEvent | DeviceStatus] = []
    link = MqttLink(
        MqttSettings(prefix=PREFIX),
        on_rating=heard.append,
        on_event=heard.append,
        on_status=heard.append,
        client_id="fuzz-server",
    )
    on_message = MqttLink._on_message.__wrapped__  # type: ignore[attr-defined]
    log = records("server.live.mqttlink")
    kinds = list(TopicKind)

    heard_kinds = messages(kinds)
    undecodable = st.tuples(undecodable_topics, PAYLOADS[TopicKind.RATING])

    @settings(FUZZ, max_examples=2500)
    @given(st.integers(0, 9).flatmap(lambda pick: undecodable if pick == 0 else heard_kinds))
    def check(msg: tuple[str | bytes, bytes]) -> None:
        topic, payload = msg
        before = sum(link.received.values()) + sum(link.invalid.values())
        on_message(link, None, None, as_message(topic, payload))
        logged = [r for r in log.take() if r.levelno >= logging.WARNING]
        after = sum(link.received.values()) + sum(link.invalid.values())
        if heard:
            doc = heard.pop()
            assert not heard and not logged and after == before + 1
            assert isinstance(topic, str)
            t = Topic.parse(topic, PREFIX)
            assert MODELS[t.kind].model_validate_json(payload) == doc
            assert (doc.hall, doc.device) == (t.hall, t.device)
            # What the board hears, the gateway stores: one decode, the same verdict.
            res = point_of(topic, payload, prefix=PREFIX, max_bytes=MAX_BYTES)
            assert isinstance(res, Accepted), res
            counts[f"accepted_{t.kind.value}"] += 1
            return
        if logged:
            assert len(logged) == 1 and after == before + 1, logged
            assert logged[0].msg == DROPPED, logged[0].getMessage()
            reason = logged[0].args[2]  # type: ignore[index]
            assert reason in GATEWAY_REASONS, logged[0].getMessage()
            counts[reason] += 1
            if isinstance(topic, str):
                res = point_of(topic, payload, prefix=PREFIX, max_bytes=MAX_BYTES)
                assert isinstance(res, Rejection), (topic, payload)  # never stored either
                assert res.reason == reason, (res, logged[0].getMessage())
            return
        # Silently ignored: only what the link does not listen to, or a cleared status.
        t = Topic.parse(topic if isinstance(topic, str) else "", PREFIX)
        assert after == before
        if t.kind is TopicKind.STATUS:
            assert payload == b""
            counts["cleared_status"] += 1
        else:
            assert t.kind in {TopicKind.CONFIG, TopicKind.CMD}
            counts["not_listened"] += 1

    check()
    report("server_link", counts, record_property)
    assert sum(counts.values()) >= 2500
    assert set(counts) >= SERVER_REASONS, f"reasons never given: {SERVER_REASONS - set(counts)}"
    assert {"accepted_rating", "accepted_event", "accepted_status"} <= set(counts)


def test_server_link_drops_a_topic_that_is_not_utf8(records: Callable[[str], Records]) -> None:
    """A non-UTF-8 topic is dropped as a bad topic, not raised into paho's guard."""
    link = MqttLink(
        MqttSettings(prefix=PREFIX),
        on_rating=print,
        on_event=print,
        on_status=print,
        client_id="fuzz-server-utf8",
    )
    log = records("server.live.mqttlink")
    on_message = MqttLink._on_message.__wrapped__  # type: ignore[attr-defined]
    on_message(link, None, None, as_message(b"wr/v1/hz-civic/k-0001/\xffrating", b"{}"))
    assert [r.args[2] for r in log.take()] == ["bad_topic"]  # type: ignore[index]
    assert link.invalid["topic"] == 1


def kiosk_reason(exc: BaseException) -> str:
    """The reason a kiosk ignored a message, from the error it logged."""
    if isinstance(exc, ValidationError):
        return schema_reason(exc)
    if isinstance(exc, TopicError | UnicodeDecodeError):
        return "bad_topic"
    raise AssertionError(f"unexpected error {exc!r}")


def test_kiosk_ignores_each_hostile_config_and_command_with_a_reason(
    tmp_path: Path,
    record_property: Callable[[str, Any], None],
    records: Callable[[str], Records],
) -> None:
    """A hostile centre or broker: the kiosk applies only valid config/cmd on its own topics."""
    counts: Counter[str] = Counter()
    configs: list[DeviceConfig] = []
    commands: list[Command] = []
    kiosk = Terminal.from_settings(
        KioskSettings(
            hall=HALL, device=DEVICE, data_dir=tmp_path / "kiosk", voice=False, mqtt=MqttSettings()
        )
    )
    pub = kiosk.publisher

    def on_config(config: DeviceConfig) -> None:
        configs.append(config)
        kiosk._on_config(config)

    def on_command(cmd: Command) -> None:
        commands.append(cmd)
        kiosk._on_command(cmd)

    pub.on_config, pub.on_command = on_config, on_command
    on_message = Publisher._on_message.__wrapped__  # type: ignore[attr-defined]
    log = records("kiosk.core.publisher")
    own = {f"{PREFIX}/v1/{HALL}/{DEVICE}/{k}" for k in ("config", "cmd")}

    centre = messages([TopicKind.CONFIG, TopicKind.CMD] * 3 + [TopicKind.RATING])
    undecodable = st.tuples(undecodable_topics, PAYLOADS[TopicKind.CONFIG])

    @settings(FUZZ, max_examples=3000)
    @given(st.integers(0, 9).flatmap(lambda pick: undecodable if pick == 0 else centre))
    def check(msg: tuple[str | bytes, bytes]) -> None:
        topic, payload = msg
        on_message(pub, None, None, as_message(topic, payload))
        logged = [r for r in log.take() if r.levelno >= logging.WARNING]
        if configs or commands:
            assert not logged and len(configs) + len(commands) == 1
            assert topic in own
            kind = "config" if configs else "cmd"
            model = DeviceConfig if configs else Command
            got = (configs or commands).pop()
            assert model.model_validate_json(payload) == got
            assert str(topic).endswith(f"/{kind}")
            # The real kiosk behind the publisher took it: its screen shows the new state.
            view = kiosk.session.view()
            if isinstance(got, DeviceConfig):
                assert (view.scale, view.window, view.language) == (
                    got.scale,
                    got.window,
                    got.language,
                )
                assert DeviceConfig.model_validate_json(kiosk.config_path.read_bytes()) == got
            elif got.cmd == "pause":
                assert view.screen is Screen.PAUSED
            elif got.cmd == "resume":
                assert view.screen is not Screen.PAUSED
            counts[f"accepted_{kind}"] += 1
            return
        assert len(logged) == 1 and logged[0].msg == KIOSK_IGNORED, [r.msg for r in logged]
        assert isinstance(logged[0].args, tuple)
        counts[kiosk_reason(logged[0].args[1])] += 1  # type: ignore[arg-type]

    check()
    report("kiosk", counts, record_property)
    kiosk.outbox.close()
    assert sum(counts.values()) >= 3000
    assert {"accepted_config", "accepted_cmd", "bad_topic", "bad_json", "invalid_field"} <= set(
        counts
    )


# --- end to end: a real broker and a real gateway ---

_BAD_CODEPOINTS = (
    range(0x00, 0x20),
    range(0x7F, 0xA0),
    range(0xD800, 0xE000),
    range(0xFDD0, 0xFDF0),
)


def deliverable(topic: str) -> bool:
    """True if Mosquitto takes a publish on `topic` and routes it to the gateway's filters."""
    if "+" in topic or "#" in topic or len(topic.encode("utf-8", "surrogatepass")) > 1000:
        return False
    for ch in topic:
        c = ord(ch)
        if any(c in r for r in _BAD_CODEPOINTS) or (c & 0xFFFF) in (0xFFFE, 0xFFFF):
            return False
    parts = topic.split("/")
    return (
        len(parts) == 5
        and parts[:2] == [PREFIX, "v1"]
        and parts[4] in {"rating", "event", "status"}
    )


@st.composite
def wire_topics(draw: st.DrawFn, kind: TopicKind) -> str:
    """A topic a client can publish on that reaches the gateway's `kind` subscription."""
    pick = draw(st.integers(0, 9))
    if pick < 7:
        return f"{PREFIX}/v1/{HALL}/{DEVICE}/{kind.value}"
    hall, device = draw(OTHER_DEVICES if pick == 7 else st.tuples(segments, segments))
    return f"{PREFIX}/v1/{hall}/{device}/{kind.value}"


def rejected_counts(gw: GatewayProcess) -> dict[str, int]:
    """The gateway's windowrate_gateway_messages_rejected_total per reason."""
    return {
        k.split('reason="')[1].rstrip('"}'): int(v)
        for k, v in gw.metrics().items()
        if k.startswith("windowrate_gateway_messages_rejected_total{")
    }


def test_gateway_survives_hostile_stream_and_stores_every_valid_rating(
    tmp_path: Path, broker: Mosquitto, influx: Influxd, record_property: Callable[[str, Any], None]
) -> None:
    """~2,000 generated hostile messages interleaved with valid ratings through real services."""
    hostile: list[tuple[str, bytes, str]] = []
    consumed = [TopicKind.RATING, TopicKind.EVENT, TopicKind.STATUS]

    @settings(FUZZ, max_examples=2600)
    @given(st.sampled_from(consumed).flatmap(lambda k: st.tuples(wire_topics(k), PAYLOADS[k])))
    def collect(msg: tuple[str, bytes]) -> None:
        topic, payload = msg
        if not deliverable(topic):
            return
        res = point_of(topic, payload, prefix=PREFIX, max_bytes=MAX_BYTES)
        if isinstance(res, Rejection):
            hostile.append((topic, payload, res.reason))

    collect()
    assert len(hostile) >= 1500  # how many of the 2,600 are hostile varies a little with time
    expected = Counter(reason for _t, _p, reason in hostile)
    # Valid ratings carrying the hardest text the contract allows (quotes, backslashes, …).
    valid = [
        rating_doc(
            HALL,
            DEVICE,
            seq,
            staff=TRICKY_TEXT[seq % len(TRICKY_TEXT)],
            ticket=TRICKY_TEXT[(seq * 7) % len(TRICKY_TEXT)],
            item=TRICKY_TEXT[(seq * 3 + 1) % len(TRICKY_TEXT)],
            level=seq % 5 + 1,
        )
        for seq in range(1, 201)
    ]
    gw = GatewayProcess(tmp_path / "gateway", broker.port, influx.url)
    gw.start()
    pub = raw_client(broker.port, "hostile")
    every = len(hostile) // len(valid) + 1
    for i, (topic, payload, _reason) in enumerate(hostile):
        pub.publish(topic, payload, qos=1)
        if i % every == 0 and i // every < len(valid):
            pub.publish(f"{PREFIX}/v1/{HALL}/{DEVICE}/rating", json.dumps(valid[i // every]), qos=1)
    for doc in valid[len(hostile) // every + 1 :]:
        pub.publish(f"{PREFIX}/v1/{HALL}/{DEVICE}/rating", json.dumps(doc), qos=1)

    wait_until(lambda: rating_count(influx.url) == len(valid), 90, what="valid ratings stored")
    wait_until(
        lambda: sum(rejected_counts(gw).values()) >= len(hostile), 90, what="hostile counted"
    )
    assert gw.proc is not None and gw.proc.poll() is None, gw.log_tail()
    assert "Traceback" not in (gw.run_dir / "gateway-1.log").read_text(errors="replace")
    got = rejected_counts(gw)
    record_property("e2e_rejected", got)
    print(json.dumps({"fuzz": "e2e", "hostile": len(hostile), "valid": len(valid), **got}))
    assert sum(got.values()) == len(hostile)
    assert got == dict(expected)
    assert rating_count(influx.url) == distinct_ids(influx.url) == len(valid)
    # Every valid rating stored once, its text exactly as sent.
    rows = influx_query(influx.url, 'SELECT "id", "staff", "ticket", "item", "seq" FROM "rating"')
    stored = {v[1]: (v[2], v[3], v[4], v[5]) for v in rows[0]["values"]}
    assert stored == {d["id"]: (d["staff"], d["ticket"], d["item"], d["seq"]) for d in valid}
    assert gw.metrics()["windowrate_gateway_ratings_written_total"] == len(valid)
    pub.loop_stop()
    pub.disconnect()
    gw.stop()
