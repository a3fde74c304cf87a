"""Behaviour tests of the line protocol and of the gateway's message decode."""

import json
import uuid
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bench.lineproto import point_line
from devstack.services import Influxd
from gateway.points import Accepted, point_of
from protocol.decode import Rejection
from protocol.messages import DeviceStatus, RatingEvent, ServiceEvent
from protocol.topics import TopicKind
from storage.client import InfluxClient, InfluxSettings
from storage.lineproto import rating_line
from storage.schema import rating_time_ns

NOW = 1_763_880_000_123
TOPIC = "wr/v1/hz-civic/k-0001/rating"
MAX = 4096
EXAMPLE: dict[str, Any] = {
    "v": 1,
    "id": "0193a9e0-7c2e-7b4a-9f1e-2d3c4b5a6f70",
    "device": "k-0001",
    "hall": "hz-civic",
    "window": "a12",
    "seq": 1234,
    "ts": 1763880000123,
    "clock_synced": True,
    "scale": 5,
    "level": 5,
    "input": "touch",
    "prompted": True,
    "staff": "0457",
    "ticket": "A0123",
    "item": "330100-001",
    "reasons": [],
}
HOSTILE = [
    'say "hi"',
    "back\\slash",
    "ends with \\",
    "\\",
    '"',
    'a,b=c d\\"e',
    "key=value,tag=x y",
    "张三 (窗口12号) 满意, 非常好",
    " leading and trailing ",
    "=",
    ",",
    "a\\,b",
    "a\\ b",
]
CONTROL_CHARS = [chr(c) for c in range(0x20)] + ["\x7f"]


def _event(**changes: Any) -> RatingEvent:
    return RatingEvent.model_validate_json(json.dumps({**EXAMPLE, **changes}))


# --------------------------------------------------------------------------- a small parser


def _split(text: str, sep: str, quotes: bool) -> list[str]:
    """Split at unescaped `sep` (outside double quotes when `quotes`), keeping escapes."""
    parts: list[str] = []
    cur: list[str] = []
    i, in_q = 0, False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if quotes and c == '"':
            in_q = not in_q
        elif c == sep and not in_q:
            parts.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    assert not in_q, f"unterminated string in {text!r}"
    parts.append("".join(cur))
    return parts


def _unescape(text: str, chars: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in chars:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _field_value(raw: str) -> Any:
    if raw.startswith('"'):
        assert raw.endswith('"') and len(raw) >= 2, raw
        return _unescape(raw[1:-1], '"\\')
    if raw in ("true", "false"):
        return raw == "true"
    if raw.endswith("i"):
        return int(raw[:-1])
    return float(raw)


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, Any], int]:
    """Parse one line-protocol point into (measurement, tags, fields, time)."""
    assert "\n" not in line
    head, fields_raw, time_raw = _split(line, " ", quotes=True)
    measurement, *tag_parts = _split(head, ",", quotes=False)
    tags: dict[str, str] = {}
    for part in tag_parts:
        key, value = _split(part, "=", quotes=False)
        tags[_unescape(key, ",= ")] = _unescape(value, ",= \\")
    fields: dict[str, Any] = {}
    for part in _split(fields_raw, ",", quotes=True):
        key, _, value = part.partition("=")
        fields[_unescape(key, ",= ")] = _field_value(value)
    return _unescape(measurement, ", "), tags, fields, int(time_raw)


def _field_tokens(line: str) -> list[str]:
    """The raw `key=value` tokens of a point's field set, sorted."""
    return sorted(_split(_split(line, " ", quotes=True)[1], ",", quotes=True))


def _assert_same_point(ev: RatingEvent) -> None:
    ours, theirs = rating_line(ev), point_line(ev)
    assert parse_line(ours) == parse_line(theirs)
    head_o, _, time_o = _split(ours, " ", quotes=True)
    head_t, _, time_t = _split(theirs, " ", quotes=True)
    assert head_o == head_t  # measurement and tags: same bytes (both in key order)
    assert time_o == time_t
    assert _field_tokens(ours) == _field_tokens(theirs)  # same escaping of every field
    m, tags, fields, t = parse_line(ours)
    assert m == "rating"
    assert tags == {
        "device": ev.device,
        "hall": ev.hall,
        "level": str(ev.level),
        "window": ev.window,
    }
    assert fields["seq"] == ev.seq and fields["id"] == str(ev.id)
    assert fields.get("staff") == ev.staff
    assert fields.get("ticket") == ev.ticket
    assert fields.get("item") == ev.item
    assert fields.get("project") == ev.project
    assert t == ev.ts * 1_000_000 + ev.seq % 1_000_000


# --------------------------------------------------------------------------- rating_line


def test_parser_sanity() -> None:
    line = 'm,a=x\\ y,b=1 s="q\\"\\\\ ,=",i=3i,b=true 17'
    assert parse_line(line) == (
        "m",
        {"a": "x y", "b": "1"},
        {"s": 'q"\\ ,=', "i": 3, "b": True},
        17,
    )


def test_design_example_matches_point() -> None:
    ev = _event()
    _assert_same_point(ev)
    _, _, fields, t = parse_line(rating_line(ev))
    assert fields == {
        "seq": 1234,
        "id": "0193a9e0-7c2e-7b4a-9f1e-2d3c4b5a6f70",
        "scale": 5,
        "input": "touch",
        "prompted": True,
        "clock_synced": True,
        "staff": "0457",
        "ticket": "A0123",
        "item": "330100-001",
    }
    assert t == 1763880000123 * 1_000_000 + 1234


def test_optional_fields_left_out() -> None:
    ev = _event(staff=None, ticket=None, item=None, reasons=[], prompted=False, clock_synced=False)
    _assert_same_point(ev)
    _, _, fields, _ = parse_line(rating_line(ev))
    assert set(fields) == {"seq", "id", "scale", "input", "prompted", "clock_synced"}
    assert fields["prompted"] is False and fields["clock_synced"] is False


def test_reasons_comma_joined() -> None:
    ev = _event(level=1, reasons=["slow", "rude", "no-answer"])
    _assert_same_point(ev)
    assert parse_line(rating_line(ev))[2]["reasons"] == "slow,rude,no-answer"


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_text_matches_point(value: str) -> None:
    ev = _event(staff=value, ticket=value, item=value, project=value)
    _assert_same_point(ev)


def test_project_is_a_string_field() -> None:
    """`project` (办件编号) is a field like `ticket`, never a tag; absent while null."""
    ev = _event(project="330100-2026-000123")
    _assert_same_point(ev)
    _, tags, fields, _ = parse_line(rating_line(ev))
    assert fields["project"] == "330100-2026-000123" and "project" not in tags
    assert "project" not in parse_line(rating_line(_event()))[2]


def test_project_is_stored_as_a_string_field(influx: Influxd) -> None:
    """Written to a real InfluxDB: read back as it was sent; a field key, not a tag key."""
    values = ['办件 "7", a=b\\c', "P-0002"]
    events = [_event(project=v, seq=i + 1) for i, v in enumerate(values)]
    with InfluxClient(InfluxSettings(url=influx.url, database="lp")) as client:
        client.write([rating_line(ev) for ev in [*events, _event(seq=3)]])
        rows = list(client.rows('SELECT "seq", "project" FROM "rating"'))
        fields = {
            r["fieldKey"]: r["fieldType"] for r in client.rows('SHOW FIELD KEYS FROM "rating"')
        }
        tags = {r["tagKey"] for r in client.rows('SHOW TAG KEYS FROM "rating"')}
    assert {r["seq"]: r["project"] for r in rows} == {1: values[0], 2: values[1], 3: None}
    assert fields["project"] == "string" and "project" not in tags


def test_window_with_dot_and_caps() -> None:
    _assert_same_point(_event(window="A.12-b_3"))


reason_codes = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}", fullmatch=True)
text_chars = st.one_of(
    st.sampled_from(list('"\\,= =张三满意中文')),
    st.characters(codec="utf-8", exclude_characters=CONTROL_CHARS),
)
texts = st.text(alphabet=text_chars, min_size=1, max_size=64)


@st.composite
def rating_events(draw: st.DrawFn) -> RatingEvent:
    scale = draw(st.sampled_from([3, 4, 5]))
    return RatingEvent.model_validate(
        dict(
            id=draw(st.uuids()),
            device=draw(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,63}", fullmatch=True)),
            hall=draw(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,63}", fullmatch=True)),
            window=draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", fullmatch=True)),
            seq=draw(st.integers(1, 2**53 - 1)),
            ts=draw(st.integers(0, 10**14 - 1)),
            clock_synced=draw(st.booleans()),
            scale=scale,
            level=draw(st.integers(1, scale)),
            input=draw(st.sampled_from(["touch", "button", "serial"])),
            prompted=draw(st.booleans()),
            staff=draw(st.none() | texts),
            ticket=draw(st.none() | texts),
            item=draw(st.none() | texts),
            reasons=draw(st.lists(reason_codes, max_size=16)),
            project=draw(st.none() | texts),
        )
    )


@settings(max_examples=300, deadline=None)
@given(rating_events())
def test_any_event_matches_point(ev: RatingEvent) -> None:
    _assert_same_point(ev)


@settings(max_examples=300, deadline=None)
@given(texts, texts, texts)
@example('"', "\\", "a,b=c d")
@example('\\\\"', '张三 "=,\\', " ")
def test_any_text_matches_point(staff: str, ticket: str, item: str) -> None:
    _assert_same_point(_event(staff=staff, ticket=ticket, item=item))


# --------------------------------------------------------------------------- rating_time_ns


def test_rating_time_ns_deterministic() -> None:
    a, b = _event(), _event()
    assert rating_time_ns(a.ts, a.seq) == rating_time_ns(b.ts, b.seq)
    assert rating_line(a) == rating_line(b)
    assert rating_time_ns(1763880000123, 1234) == 1763880000123 * 1_000_000 + 1234


def test_rating_time_ns_distinct_per_seq() -> None:
    times = {rating_time_ns(NOW, seq) for seq in range(1, 1001)}
    assert len(times) == 1000
    assert all(NOW * 1_000_000 < t < (NOW + 1) * 1_000_000 for t in times)


def test_rating_time_ns_wraps_mod_million() -> None:
    assert rating_time_ns(NOW, 1_000_000) == NOW * 1_000_000
    assert rating_time_ns(NOW, 1_000_001) == NOW * 1_000_000 + 1


# --------------------------------------------------------------------------- decode


def _decode(
    payload: bytes | dict[str, Any],
    topic: str = TOPIC,
    max_bytes: int = MAX,
    prefix: str = "wr",
) -> Accepted | Rejection:
    raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    return point_of(topic, raw, prefix=prefix, max_bytes=max_bytes, now_ms=NOW, received_ns=42)


def _reason(payload: bytes | dict[str, Any], **kw: Any) -> str:
    got = _decode(payload, **kw)
    assert isinstance(got, Rejection), got
    assert got.detail
    return got.reason


class TestDecode:
    def test_valid_rating_accepted(self) -> None:
        got = _decode(EXAMPLE)
        assert isinstance(got, Accepted)
        assert got.kind is TopicKind.RATING
        assert got.rating == _event()
        assert got.line == rating_line(_event())

    def test_custom_prefix(self) -> None:
        got = _decode(EXAMPLE, topic="acme/x/v1/hz-civic/k-0001/rating", prefix="acme/x")
        assert isinstance(got, Accepted) and got.rating is not None
        assert _reason(EXAMPLE, topic=TOPIC, prefix="acme/x") == "bad_topic"

    @pytest.mark.parametrize(
        "payload", [b"", b"not json", b"\xff\xfe\xfd", b'{"v":1,', b"{", b"\x00"]
    )
    def test_bad_json(self, payload: bytes) -> None:
        assert _reason(payload) == "bad_json"

    def test_invalid_utf8_inside_a_string(self) -> None:
        raw = json.dumps({**EXAMPLE, "staff": "XX"}).encode().replace(b"XX", b"\xc3\x28")
        assert _reason(raw) == "bad_json"

    def test_unknown_key(self) -> None:
        assert _reason({**EXAMPLE, "extra": 1}) == "unknown_key"

    def test_project_accepted_and_stored_in_the_line(self) -> None:
        got = _decode({**EXAMPLE, "project": "330100-2026-000123"})
        assert isinstance(got, Accepted) and got.rating is not None
        assert got.rating.project == "330100-2026-000123"
        assert parse_line(got.line)[2]["project"] == "330100-2026-000123"

    @pytest.mark.parametrize("value", ["", "x" * 65, 7, "a\nb"])
    def test_bad_project(self, value: Any) -> None:
        assert _reason({**EXAMPLE, "project": value}) == "invalid_field"

    @pytest.mark.parametrize("key", ["id", "seq", "ts", "level", "device"])
    def test_missing_key(self, key: str) -> None:
        doc = dict(EXAMPLE)
        del doc[key]
        assert _reason(doc) == "missing_key"

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("level", "5"),
            ("seq", True),
            ("seq", 0),
            ("ts", "1763880000123"),
            ("input", "voice"),
            ("id", "nope"),
            ("staff", "a\nb"),
            ("reasons", "slow"),
            ("prompted", 1),
        ],
    )
    def test_invalid_field(self, key: str, value: Any) -> None:
        assert _reason({**EXAMPLE, key: value}) == "invalid_field"

    @pytest.mark.parametrize("payload", [b"[]", b"1", b'"x"', b"null"])
    def test_not_an_object(self, payload: bytes) -> None:
        assert _reason(payload) in {"bad_json", "invalid_field"}

    @pytest.mark.parametrize(("scale", "level"), [(5, 6), (5, 0), (4, 5), (3, 4), (3, 0)])
    def test_level_out_of_scale(self, scale: int, level: int) -> None:
        assert _reason({**EXAMPLE, "scale": scale, "level": level}) == "level_out_of_scale"

    def test_topic_mismatch(self) -> None:
        assert _reason({**EXAMPLE, "hall": "other-hall"}) == "topic_mismatch"
        assert _reason({**EXAMPLE, "device": "k-0002"}) == "topic_mismatch"
        assert _reason(EXAMPLE, topic="wr/v1/hz-civic/k-0002/rating") == "topic_mismatch"

    @pytest.mark.parametrize(
        "topic",
        [
            "wr/v1/hz-civic/k-0001",
            "xx/v1/hz-civic/k-0001/rating",
            "wr/v2/hz-civic/k-0001/rating",
            "wr/v1/HZ/k-0001/rating",
            "wr/v1/hz-civic/k-0001/rating/x",
            "wr/v1/+/+/rating",
            "wr/v1/hz-civic/k-0001/config",
            "wr/v1/hz-civic/k-0001/cmd",
            "",
        ],
    )
    def test_bad_topic(self, topic: str) -> None:
        assert _reason(EXAMPLE, topic=topic) == "bad_topic"

    def test_bad_topic_trailing_newline_in_device(self) -> None:
        assert _reason(EXAMPLE, topic="wr/v1/hz-civic/k-0001\n/rating") == "bad_topic"

    def test_ts_before_2020(self) -> None:
        assert _reason({**EXAMPLE, "ts": 1_577_836_799_999}) == "ts_before_2020"
        assert _reason({**EXAMPLE, "ts": 1000}) == "ts_before_2020"
        assert isinstance(_decode({**EXAMPLE, "ts": 1_577_836_800_000}), Accepted)

    def test_ts_in_future(self) -> None:
        assert _reason({**EXAMPLE, "ts": NOW + 300_001}) == "ts_in_future"
        assert isinstance(_decode({**EXAMPLE, "ts": NOW + 300_000}), Accepted)

    def test_too_large(self) -> None:
        raw = json.dumps(EXAMPLE).encode()
        assert _reason(raw, max_bytes=len(raw) - 1) == "too_large"
        assert isinstance(_decode(raw, max_bytes=len(raw)), Accepted)
        assert _reason(b"x" * (MAX + 1)) == "too_large"

    def test_valid_service_event(self) -> None:
        ev = {
            "v": 1,
            "id": str(uuid.uuid4()),
            "device": "k-0001",
            "hall": "hz-civic",
            "window": "a12",
            "ts": NOW - 10,
            "clock_synced": True,
            "type": "staff_login",
            "staff": "0457",
        }
        got = _decode(ev, topic="wr/v1/hz-civic/k-0001/event")
        assert isinstance(got, Accepted)
        assert got.kind is TopicKind.EVENT and got.rating is None
        assert ServiceEvent.model_validate_json(json.dumps(ev)).staff == "0457"
        m, tags, fields, _ = parse_line(got.line)
        assert (m, tags) == (
            "event",
            {"device": "k-0001", "hall": "hz-civic", "type": "staff_login"},
        )
        assert fields["staff"] == "0457"
        # the same event on the rating topic is a schema error
        assert _reason(ev) == "unknown_key"
        assert _reason({**ev, "ts": 5}, topic="wr/v1/hz-civic/k-0001/event") == "ts_before_2020"

    def test_last_will_accepted(self) -> None:
        will = {"v": 1, "device": "k-0001", "hall": "hz-civic", "state": "offline"}
        got = _decode(will, topic="wr/v1/hz-civic/k-0001/status")
        assert isinstance(got, Accepted)
        assert got.kind is TopicKind.STATUS and got.rating is None
        m, tags, fields, t = parse_line(got.line)
        assert (m, tags, fields, t) == (
            "device_status",
            {"device": "k-0001", "hall": "hz-civic"},
            {"state": "offline"},
            42,
        )
        # what the kiosk actually sends as its will
        kiosk_will = DeviceStatus(device="k-0001", hall="hz-civic", state="offline")
        raw = kiosk_will.model_dump_json(exclude_none=True).encode()
        assert isinstance(_decode(raw, topic="wr/v1/hz-civic/k-0001/status"), Accepted)

    def test_full_status_accepted(self) -> None:
        st_doc = {
            "v": 1,
            "device": "k-0001",
            "hall": "hz-civic",
            "state": "online",
            "ts": NOW,
            "window": "a12",
            "last_seq": 1234,
            "backlog": 0,
            "clock_synced": True,
            "version": "0.1.0",
        }
        got = _decode(st_doc, topic="wr/v1/hz-civic/k-0001/status")
        assert isinstance(got, Accepted)
        _, _, fields, _ = parse_line(got.line)
        assert fields["state"] == "online" and fields["last_seq"] == 1234
        assert _reason({**st_doc, "state": "gone"}, topic="wr/v1/hz-civic/k-0001/status") == (
            "invalid_field"
        )
        assert _reason({**st_doc, "hall": "x"}, topic="wr/v1/hz-civic/k-0001/status") == (
            "topic_mismatch"
        )


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)
payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda over: json.dumps({**EXAMPLE, **over}).encode(),
        st.dictionaries(st.sampled_from([*EXAMPLE, "x"]), json_values, max_size=4),
    ),
    st.builds(
        lambda raw, cut: raw[:cut], st.just(json.dumps(EXAMPLE).encode()), st.integers(0, 400)
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    payloads,
    st.sampled_from(
        [TOPIC, "wr/v1/hz-civic/k-0001/event", "wr/v1/hz-civic/k-0001/status", "bad/topic"]
    ),
)
def test_decode_never_raises(payload: bytes, topic: str) -> None:
    got = point_of(topic, payload, prefix="wr", max_bytes=MAX, now_ms=NOW)
    assert isinstance(got, Accepted | Rejection)
    if isinstance(got, Accepted) and topic == TOPIC:
        assert got.rating is not None and got.line == rating_line(got.rating)
    if isinstance(got, Rejection):
        assert got.reason and len(got.detail) <= 600
