"""Behaviour tests of the wire contract v1 (`protocol/`): messages, topics, scales, clock."""

import json
import uuid
from collections.abc import Callable
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.clock import MAX_FUTURE_MS, TS_MIN_MS, TsVerdict, check_ts
from protocol.decode import REASONS, Decoded, Rejection, decode
from protocol.messages import RatingEvent
from protocol.scales import SCALES, level_index, level_label, offers_reasons
from protocol.topics import Topic, TopicError, TopicKind, subscription
from server.scores.policy import Policy
from storage.schema import RATING_FIELDS, RATING_TAGS

# The example RatingEvent of docs/wire-contract.md, verbatim.
DESIGN_EXAMPLE = """
{
  "v": 1,
  "id": "0193a9e0-7c2e-7b4a-9f1e-2d3c4b5a6f70",
  "device": "k-0001", "hall": "hz-civic", "window": "a12",
  "seq": 1234,
  "ts": 1763880000123, "clock_synced": true,
  "scale": 5, "level": 5,
  "input": "touch", "prompted": true,
  "staff": "0457", "ticket": "A0123", "item": "330100-001",
  "reasons": []
}
"""
EXAMPLE: dict[str, Any] = json.loads(DESIGN_EXAMPLE)
CONTROL_CHARS = [chr(c) for c in range(0x20)] + ["\x7f"]


def _validate(doc: dict[str, Any]) -> RatingEvent:
    """Validate a document the way it arrives on the wire (JSON text)."""
    return RatingEvent.model_validate_json(json.dumps(doc, ensure_ascii=False))


def _with(**changes: Any) -> dict[str, Any]:
    """The docs/wire-contract.md example with some keys replaced."""
    return {**EXAMPLE, **changes}


def _rejected(doc: dict[str, Any]) -> None:
    """Assert that `doc` is rejected with a pydantic ValidationError."""
    with pytest.raises(pydantic.ValidationError):
        _validate(doc)


# --------------------------------------------------------------------------- RatingEvent


class TestRatingEvent:
    def test_design_example_validates(self) -> None:
        ev = RatingEvent.model_validate_json(DESIGN_EXAMPLE)
        assert ev.id == uuid.UUID("0193a9e0-7c2e-7b4a-9f1e-2d3c4b5a6f70")
        assert (ev.device, ev.hall, ev.window) == ("k-0001", "hz-civic", "a12")
        assert (ev.seq, ev.ts, ev.clock_synced) == (1234, 1763880000123, True)
        assert (ev.scale, ev.level, ev.input, ev.prompted) == (5, 5, "touch", True)
        assert (ev.staff, ev.ticket, ev.item, ev.reasons) == ("0457", "A0123", "330100-001", [])

    def test_round_trip_is_equal(self) -> None:
        ev = RatingEvent.model_validate_json(DESIGN_EXAMPLE)
        again = RatingEvent.model_validate_json(ev.model_dump_json())
        assert again == ev
        assert json.loads(ev.model_dump_json()) == EXAMPLE

    def test_nulls_for_optional_text(self) -> None:
        ev = _validate(_with(staff=None, ticket=None, item=None))
        assert ev.staff is ev.ticket is ev.item is None

    def test_unknown_key_rejected(self) -> None:
        _rejected(_with(extra="x"))

    @pytest.mark.parametrize(
        "key",
        [
            "id",
            "device",
            "hall",
            "window",
            "seq",
            "ts",
            "clock_synced",
            "scale",
            "level",
            "input",
            "prompted",
        ],
    )
    def test_missing_key_rejected(self, key: str) -> None:
        doc = dict(EXAMPLE)
        del doc[key]
        _rejected(doc)

    def test_level_as_string_rejected(self) -> None:
        _rejected(_with(level="5"))

    @pytest.mark.parametrize("key", ["seq", "ts", "level", "scale", "v"])
    def test_number_as_string_rejected(self, key: str) -> None:
        _rejected(_with(**{key: str(EXAMPLE[key])}))

    @pytest.mark.parametrize(
        "key",
        [
            "seq",
            "ts",
            "level",
            "scale",
            "v",
        ],
    )
    def test_number_as_float_rejected(self, key: str) -> None:
        _rejected(_with(**{key: float(EXAMPLE[key])}))

    @pytest.mark.parametrize("seq", [0, -1])
    def test_seq_below_one_rejected(self, seq: int) -> None:
        _rejected(_with(seq=seq))

    def test_seq_one_accepted(self) -> None:
        assert _validate(_with(seq=1)).seq == 1

    @pytest.mark.parametrize("key", ["seq", "ts", "level", "scale", "v"])
    def test_bool_where_int_rejected(self, key: str) -> None:
        _rejected(_with(**{key: True}))

    def test_scale_true_with_level_1_rejected(self) -> None:
        _rejected(_with(scale=True, level=1))

    @pytest.mark.parametrize("key", ["clock_synced", "prompted"])
    def test_int_where_bool_rejected(self, key: str) -> None:
        _rejected(_with(**{key: 1}))

    @pytest.mark.parametrize("scale", [3, 4, 5])
    def test_every_level_of_scale_accepted(self, scale: int) -> None:
        for level in range(1, scale + 1):
            ev = _validate(_with(scale=scale, level=level))
            assert (ev.scale, ev.level) == (scale, level)

    @pytest.mark.parametrize("scale", [3, 4, 5])
    def test_level_outside_scale_rejected(self, scale: int) -> None:
        for level in (-1, 0, scale + 1, 6, 100):
            _rejected(_with(scale=scale, level=level))

    @pytest.mark.parametrize("scale", [0, 1, 2, 6, 10])
    def test_scale_not_3_4_5_rejected(self, scale: int) -> None:
        _rejected(_with(scale=scale, level=1))

    @pytest.mark.parametrize("key", ["device", "hall"])
    @pytest.mark.parametrize(
        "value", ["K-0001", "-k1", "_k1", "a" * 65, "", "k 1", "k/1", "k+1", "k#1", "k.1", "k1\n"]
    )
    def test_bad_ids_rejected(self, key: str, value: str) -> None:
        _rejected(_with(**{key: value}))

    @pytest.mark.parametrize("value", ["a" * 64, "0", "k_0-1"])
    def test_good_ids_accepted(self, value: str) -> None:
        ev = _validate(_with(device=value, hall=value))
        assert ev.device == ev.hall == value

    @pytest.mark.parametrize("value", ["voice", "Touch", "", "keyboard"])
    def test_input_not_in_set_rejected(self, value: str) -> None:
        _rejected(_with(input=value))

    @pytest.mark.parametrize("value", ["touch", "button", "serial"])
    def test_input_in_set_accepted(self, value: str) -> None:
        assert _validate(_with(input=value)).input == value

    @pytest.mark.parametrize("key", ["staff", "ticket", "item"])
    @pytest.mark.parametrize("ch", ["\x00", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f"])
    def test_text_with_control_character_rejected(self, key: str, ch: str) -> None:
        _rejected(_with(**{key: f"04{ch}57"}))

    @pytest.mark.parametrize("key", ["staff", "ticket", "item"])
    def test_text_length_bounds(self, key: str) -> None:
        assert getattr(_validate(_with(**{key: "x" * 64})), key) == "x" * 64
        assert getattr(_validate(_with(**{key: "张"})), key) == "张"
        _rejected(_with(**{key: "x" * 65}))
        _rejected(_with(**{key: ""}))

    def test_reasons_bound(self) -> None:
        sixteen = [f"r{i}" for i in range(16)]
        assert _validate(_with(reasons=sixteen)).reasons == sixteen
        _rejected(_with(reasons=[*sixteen, "r16"]))

    @pytest.mark.parametrize("reason", ["", "Slow", "-x", "a" * 33, "a b", 1, None])
    def test_bad_reason_rejected(self, reason: Any) -> None:
        _rejected(_with(reasons=[reason]))

    @pytest.mark.parametrize("v", [0, 2, "1"])
    def test_version_must_be_1(self, v: Any) -> None:
        _rejected(_with(v=v))

    @pytest.mark.parametrize("ts", [-1, 10**14])
    def test_ts_bounds(self, ts: int) -> None:
        _rejected(_with(ts=ts))

    def test_bad_uuid_rejected(self) -> None:
        _rejected(_with(id="not-a-uuid"))

    def test_frozen(self) -> None:
        ev = RatingEvent.model_validate_json(DESIGN_EXAMPLE)
        with pytest.raises(pydantic.ValidationError):
            ev.level = 1  # type: ignore[misc]


class TestProject:
    """`project` (办件编号): optional text ≤ 64 on a RatingEvent, accepted from now on."""

    def test_absent_is_none(self) -> None:
        assert _validate(EXAMPLE).project is None

    @pytest.mark.parametrize("value", ["330100-2026-000123", "办件-2026-0001", "x" * 64, 'a"b\\c'])
    def test_text_accepted(self, value: str) -> None:
        assert _validate(_with(project=value)).project == value

    def test_null_accepted(self) -> None:
        assert _validate(_with(project=None)).project is None

    @pytest.mark.parametrize("value", ["", "x" * 65, 12345, True, ["a"], {"id": "a"}])
    def test_bad_value_rejected(self, value: Any) -> None:
        _rejected(_with(project=value))

    @pytest.mark.parametrize("char", CONTROL_CHARS)
    def test_control_character_rejected(self, char: str) -> None:
        _rejected(_with(project=f"P{char}1"))

    def test_left_out_of_the_json_while_null(self) -> None:
        """Today's kiosks serialise RatingEvent: no `"project": null` for older gateways."""
        ev = _validate(EXAMPLE)
        assert "project" not in json.loads(ev.model_dump_json())
        bound = ev.model_copy(update={"project": "P-1"})
        assert json.loads(bound.model_dump_json())["project"] == "P-1"
        assert RatingEvent.model_validate_json(bound.model_dump_json()) == bound

    def test_decoded_with_the_rating(self) -> None:
        now = EXAMPLE["ts"] + 1000
        topic = "wr/v1/hz-civic/k-0001/rating"
        res = decode(topic, json.dumps(_with(project="P-7")).encode(), now)
        assert isinstance(res, Decoded) and isinstance(res.message, RatingEvent)
        assert res.message.project == "P-7"
        long = decode(topic, json.dumps(_with(project="x" * 65)).encode(), now)
        assert isinstance(long, Rejection) and long.reason == "invalid_field"

    def test_stored_as_a_field_not_a_tag(self) -> None:
        assert "project" in RATING_FIELDS and "project" not in RATING_TAGS


# --------------------------------------------------------------------------- strategies

ID_RE = r"[a-z0-9][a-z0-9_-]{0,63}"
ids = st.from_regex(ID_RE, fullmatch=True)
windows = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", fullmatch=True)
reason_codes = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}", fullmatch=True)
# TextStr: 1–64 characters, no C0 control character and no DEL; hostile characters favoured.
text_chars = st.one_of(
    st.sampled_from(list("\"\\,= '=满意张三中文{}[]:")),
    st.characters(codec="utf-8", exclude_characters=CONTROL_CHARS),
)
texts = st.text(alphabet=text_chars, min_size=1, max_size=64)
scale_level = st.sampled_from([3, 4, 5]).flatmap(lambda s: st.tuples(st.just(s), st.integers(1, s)))


@st.composite
def rating_events(draw: st.DrawFn) -> RatingEvent:
    """Any valid RatingEvent."""
    scale, level = draw(scale_level)
    return RatingEvent.model_validate(
        dict(
            id=draw(st.uuids()),
            device=draw(ids),
            hall=draw(ids),
            window=draw(windows),
            seq=draw(st.integers(1, 2**53 - 1)),
            ts=draw(st.integers(0, 10**14 - 1)),
            clock_synced=draw(st.booleans()),
            scale=scale,
            level=level,
            input=draw(st.sampled_from(["touch", "button", "serial"])),
            prompted=draw(st.booleans()),
            staff=draw(st.none() | texts),
            ticket=draw(st.none() | texts),
            item=draw(st.none() | texts),
            reasons=draw(st.lists(reason_codes, max_size=16)),
            project=draw(st.none() | texts),
        )
    )


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
field_names = st.sampled_from([*EXAMPLE.keys(), "project", "extra"]) | st.text(max_size=10)
random_dicts = st.dictionaries(field_names, json_values, max_size=18)
mutated_examples = st.builds(
    lambda over, drop: {**{k: v for k, v in EXAMPLE.items() if k not in drop}, **over},
    st.dictionaries(st.sampled_from(list(EXAMPLE)), json_values, max_size=4),
    st.sets(st.sampled_from(list(EXAMPLE)), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(rating_events())
def test_any_valid_event_round_trips(ev: RatingEvent) -> None:
    text = ev.model_dump_json()
    assert RatingEvent.model_validate_json(text) == ev
    assert RatingEvent.model_validate_json(text.encode()) == ev


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_dicts | mutated_examples)
def test_random_json_only_raises_validation_error(doc: dict[str, Any]) -> None:
    attempts: list[Callable[[], RatingEvent]] = [
        lambda: RatingEvent.model_validate_json(json.dumps(doc)),
        lambda: RatingEvent.model_validate(doc),
    ]
    for attempt in attempts:
        try:
            ev = attempt()
        except pydantic.ValidationError:
            continue
        assert 1 <= ev.level <= ev.scale


# --------------------------------------------------------------------------- Topic


class TestTopic:
    def test_build_default_prefix(self) -> None:
        t = Topic("hz-civic", "k-0001", TopicKind.RATING)
        assert str(t) == "wr/v1/hz-civic/k-0001/rating"
        assert Topic.parse(str(t)) == t

    @pytest.mark.parametrize("kind", list(TopicKind))
    @pytest.mark.parametrize("prefix", ["wr", "acme", "city-7/wr"])
    def test_round_trip(self, kind: TopicKind, prefix: str) -> None:
        t = Topic("hz-civic", "k-0001", kind, prefix)
        text = str(t)
        assert text == f"{prefix}/v1/hz-civic/k-0001/{kind.value}"
        assert Topic.parse(text, prefix) == t

    @pytest.mark.parametrize(
        ("text", "prefix"),
        [
            ("xx/v1/hz/k1/rating", "wr"),  # wrong prefix
            ("wr/v1/hz/k1/rating", "acme"),  # wrong prefix
            ("wrx/v1/hz/k1/rating", "wr"),
            ("/wr/v1/hz/k1/rating", "wr"),
            ("wr/hz/k1/rating", "wr"),  # missing version
            ("wr/v2/hz/k1/rating", "wr"),
            ("wr/V1/hz/k1/rating", "wr"),
            ("wr/v1/hz/k1/rating/x", "wr"),  # extra segment
            ("wr/v1/hz/k1/rating/", "wr"),
            ("wr/v1/x/hz/k1/rating", "wr"),
            ("wr/v1/hz/rating", "wr"),  # missing segment
            ("wr/v1/hz//rating", "wr"),
            ("wr/v1//k1/rating", "wr"),
            ("wr/v1/HZ/k1/rating", "wr"),  # bad ids
            ("wr/v1/hz/K1/rating", "wr"),
            ("wr/v1/-hz/k1/rating", "wr"),
            ("wr/v1/hz/-k1/rating", "wr"),
            (f"wr/v1/{'a' * 65}/k1/rating", "wr"),
            (f"wr/v1/hz/{'a' * 65}/rating", "wr"),
            ("wr/v1/h z/k1/rating", "wr"),
            ("wr/v1/hz/k1/ratings", "wr"),  # unknown kind
            ("wr/v1/hz/k1/Rating", "wr"),
            ("wr/v1/hz/k1/", "wr"),
            ("wr/v1/+/+/rating", "wr"),  # wildcards
            ("wr/v1/hz/+/rating", "wr"),
            ("wr/v1/+/k1/rating", "wr"),
            ("wr/v1/hz/k1/+", "wr"),
            ("wr/v1/#", "wr"),
            ("wr/v1/hz/#", "wr"),
            ("wr/v1/hz/k1/#", "wr"),
            ("", "wr"),
        ],
    )
    def test_parse_rejects(self, text: str, prefix: str) -> None:
        with pytest.raises(TopicError):
            Topic.parse(text, prefix)

    def test_max_length_id_accepted(self) -> None:
        t = Topic.parse(f"wr/v1/{'a' * 64}/{'0' * 64}/status")
        assert (t.hall, t.device, t.kind) == ("a" * 64, "0" * 64, TopicKind.STATUS)

    @pytest.mark.parametrize(
        "text",
        [
            "wr/v1/hz-civic\n/k-0001/rating",
            "wr/v1/hz-civic/k-0001\n/rating",
        ],
    )
    def test_parse_rejects_trailing_newline_in_id(self, text: str) -> None:
        with pytest.raises(TopicError):
            Topic.parse(text)

    def test_constructor_validates(self) -> None:
        with pytest.raises(TopicError):
            Topic("HZ", "k1", TopicKind.RATING)
        with pytest.raises(TopicError):
            Topic("hz", "k1", TopicKind.RATING, prefix="")
        with pytest.raises(TopicError):
            Topic("hz", "k1", TopicKind.RATING, prefix="wr/")

    def test_subscription(self) -> None:
        assert subscription(TopicKind.RATING) == "wr/v1/+/+/rating"
        assert subscription(TopicKind.RATING, share="gateway") == "$share/gateway/wr/v1/+/+/rating"
        assert subscription(TopicKind.STATUS, prefix="acme") == "acme/v1/+/+/status"


@settings(max_examples=200, deadline=None)
@given(ids, ids, st.sampled_from(list(TopicKind)), st.sampled_from(["wr", "acme", "a/b-c"]))
def test_topic_round_trip_property(hall: str, device: str, kind: TopicKind, prefix: str) -> None:
    t = Topic(hall, device, kind, prefix)
    assert Topic.parse(str(t), prefix) == t


topic_texts = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.one_of(
            st.sampled_from(["wr", "v1", "+", "#", "rating", "", "hz", "K"]), st.text(max_size=8)
        ),
        max_size=7,
    ).map("/".join),
)


@settings(max_examples=500, deadline=None)
@given(topic_texts)
def test_topic_parse_only_raises_topic_error(text: str) -> None:
    try:
        t = Topic.parse(text)
    except TopicError:
        return
    assert isinstance(t.kind, TopicKind)


# --------------------------------------------------------------------------- scales

LABELS_ZH = {
    5: {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"},
    4: {4: "非常满意", 3: "满意", 2: "基本满意", 1: "不满意"},
    3: {3: "满意", 2: "基本满意", 1: "不满意"},
}
SATISFIED_OR_BETTER = {"非常满意", "满意", "基本满意"}
ALL_PAIRS = [(s, lv) for s in (3, 4, 5) for lv in range(1, s + 1)]


class TestScales:
    def test_scales(self) -> None:
        assert tuple(SCALES) == (3, 4, 5)

    @pytest.mark.parametrize(("scale", "level"), ALL_PAIRS)
    def test_zh_labels(self, scale: int, level: int) -> None:
        assert level_label(scale, level) == LABELS_ZH[scale][level]
        assert level_label(scale, level, "zh") == LABELS_ZH[scale][level]

    @pytest.mark.parametrize(("scale", "level"), ALL_PAIRS)
    def test_en_labels_exist(self, scale: int, level: int) -> None:
        label = level_label(scale, level, "en")
        assert label.strip() and label.isascii()

    @pytest.mark.parametrize("scale", [3, 4, 5])
    def test_labels_distinct_per_scale(self, scale: int) -> None:
        for lang in ("zh", "en"):
            labels = [level_label(scale, lv, lang) for lv in range(1, scale + 1)]
            assert len(set(labels)) == scale

    def test_en_labels_agree_across_scales(self) -> None:
        # The same zh label has the same en label on every scale.
        seen: dict[str, str] = {}
        for scale, level in ALL_PAIRS:
            zh, en = level_label(scale, level, "zh"), level_label(scale, level, "en")
            assert seen.setdefault(zh, en) == en

    @pytest.mark.parametrize(("scale", "level"), [(3, 0), (3, 4), (4, 5), (5, 6), (6, 1), (2, 1)])
    def test_invalid_level_raises(self, scale: int, level: int) -> None:
        for fn in (level_label, level_index, offers_reasons):
            with pytest.raises(ValueError):
                fn(scale, level)

    @pytest.mark.parametrize(("scale", "level"), ALL_PAIRS)
    def test_level_index(self, scale: int, level: int) -> None:
        assert level_index(scale, level) == pytest.approx((level - 1) / (scale - 1) * 100)

    def test_level_index_ends(self) -> None:
        for scale in (3, 4, 5):
            assert level_index(scale, 1) == 0
            assert level_index(scale, scale) == 100
        assert level_index(5, 3) == 50
        assert level_index(3, 2) == 50
        assert level_index(4, 2) == pytest.approx(100 / 3)

    @pytest.mark.parametrize(("scale", "level"), ALL_PAIRS)
    def test_offers_reasons(self, scale: int, level: int) -> None:
        expected = level <= 2 if scale == 5 else level == 1
        assert offers_reasons(scale, level) is expected

    @pytest.mark.parametrize(("scale", "level"), ALL_PAIRS)
    def test_default_policy_negative_is_where_the_device_asks(self, scale: int, level: int) -> None:
        assert Policy().negative(scale, level) is offers_reasons(scale, level)

    @pytest.mark.parametrize(
        ("scale", "level"),
        [(s, lv) for s, lv in ALL_PAIRS],
    )
    def test_default_policy_satisfied(self, scale: int, level: int) -> None:
        expected = LABELS_ZH[scale][level] in SATISFIED_OR_BETTER
        assert Policy().satisfied(scale, level) is expected


# --------------------------------------------------------------------------- clock


class TestCheckTs:
    NOW = 1_763_880_000_123

    def test_2019_too_old(self) -> None:
        assert check_ts(1_546_300_800_000, self.NOW) is TsVerdict.TOO_OLD  # 2019-01-01
        assert check_ts(TS_MIN_MS - 1, self.NOW) is TsVerdict.TOO_OLD  # 2019-12-31T23:59:59.999
        assert check_ts(0, self.NOW) is TsVerdict.TOO_OLD

    def test_2020_exactly_ok(self) -> None:
        assert TS_MIN_MS == 1_577_836_800_000
        assert check_ts(1_577_836_800_000, self.NOW) is TsVerdict.OK

    def test_now_ok(self) -> None:
        assert check_ts(self.NOW, self.NOW) is TsVerdict.OK

    def test_five_minutes_ahead_ok(self) -> None:
        assert MAX_FUTURE_MS == 300_000
        assert check_ts(self.NOW + 5 * 60 * 1000, self.NOW) is TsVerdict.OK

    def test_beyond_five_minutes_in_future(self) -> None:
        assert check_ts(self.NOW + 5 * 60 * 1000 + 1, self.NOW) is TsVerdict.IN_FUTURE

    def test_verdict_values_are_reason_codes(self) -> None:
        assert TsVerdict.TOO_OLD.value == "ts_before_2020"
        assert TsVerdict.IN_FUTURE.value == "ts_in_future"


# --------------------------------------------------------------------------- decode


class TestDecode:
    """The one decode of the gateway and the server's live link."""

    NOW = 1_763_880_000_123
    TOPIC = "wr/v1/hz-civic/k-0001/{}"

    def _event(self, ts: int) -> bytes:
        doc = {
            "v": 1,
            "id": "0193a9e0-7c2e-7b4a-9f1e-2d3c4b5a6f71",
            "device": "k-0001",
            "hall": "hz-civic",
            "ts": ts,
            "clock_synced": True,
            "type": "pause",
        }
        return json.dumps(doc).encode()

    def test_rating_decoded(self) -> None:
        res = decode(self.TOPIC.format("rating"), json.dumps(EXAMPLE).encode(), self.NOW)
        assert isinstance(res, Decoded)
        assert res.topic.kind is TopicKind.RATING
        assert res.message == _validate(EXAMPLE)

    def test_service_event_ts_window_as_for_ratings(self) -> None:
        """Found in review: the live link accepted service events from any time."""
        topic = self.TOPIC.format("event")
        assert isinstance(decode(topic, self._event(self.NOW), self.NOW), Decoded)
        future = decode(topic, self._event(self.NOW + MAX_FUTURE_MS + 1), self.NOW)
        assert isinstance(future, Rejection) and future.reason == "ts_in_future"
        old = decode(topic, self._event(TS_MIN_MS - 1), self.NOW)
        assert isinstance(old, Rejection) and old.reason == "ts_before_2020"

    def test_config_and_cmd_are_not_device_messages(self) -> None:
        for kind in ("config", "cmd"):
            res = decode(self.TOPIC.format(kind), b"{}", self.NOW)
            assert isinstance(res, Rejection) and res.reason == "bad_topic"

    def test_every_reason_is_listed(self) -> None:
        topic = self.TOPIC.format("rating")
        cases = [
            decode(topic, b"x" * 70_000, self.NOW),
            decode("nope", b"{}", self.NOW),
            decode(topic, b"{", self.NOW),
            decode(topic, json.dumps(_with(extra=1)).encode(), self.NOW),
            decode(topic, json.dumps({"v": 1}).encode(), self.NOW),
            decode(topic, json.dumps(_with(level=6)).encode(), self.NOW),
            decode(topic, json.dumps(_with(seq=0)).encode(), self.NOW),
            decode(topic, json.dumps(_with(device="k-0002")).encode(), self.NOW),
        ]
        reasons = [r.reason for r in cases if isinstance(r, Rejection)]
        assert len(reasons) == len(cases)
        assert set(reasons) <= set(REASONS)
