"""The fast decode and the reference decode give the same verdict on every hostile input.

`protocol.decode.decode` (each model's pydantic-core validator called directly) and
`protocol.decode.decode_reference` (the decode as it was: `model_validate_json`) see the
fuzz test's hostile corpus — the same generators, imported from tests/test_fuzz.py — plus
its fixed samples and valid messages of every kind; for every case both accept the same
message or reject it with the same reason and detail. The per-stage bench
(`bench.stages`) runs on a small size, and its before/after outputs agree too.
"""

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.stages import messages as bench_messages
from bench.stages import rating_line_before
from bench.stages import run as run_stages
from devstack.services import Influxd
from protocol.decode import Decoded, Rejection, decode, decode_reference
from protocol.messages import RatingEvent
from protocol.topics import TopicKind
from storage.lineproto import rating_line
from tests.support import REPO
from tests.test_fuzz import (
    BASE_TS,
    EDGES,
    FUZZ,
    GATEWAY_REASONS,
    HALL,
    HOSTILE_TOPICS,
    MAX_BYTES,
    ODD_NUMBERS,
    ODD_STRINGS,
    PAYLOADS,
    PREFIX,
    RAW_SAMPLES,
    TRICKY_TEXT,
    WHOLE_TOPICS,
    _variants,
    messages,
    raw_payloads,
    whole_topics,
    wire_topics,
)
from tests.test_fuzz import DEVICE as FUZZ_DEVICE

CONSUMED = [TopicKind.RATING, TopicKind.EVENT, TopicKind.STATUS]
RATING_TOPIC = f"{PREFIX}/v1/{HALL}/{FUZZ_DEVICE}/rating"


class Verdicts:
    """Run both decodes on each case; count outcomes; fail on the first disagreement."""

    def __init__(self) -> None:
        """Start with no cases."""
        self.counts: Counter[str] = Counter()

    def check(self, topic: str, payload: bytes, now_ms: int | None = None) -> str:
        """Assert both decodes agree on (topic, payload); return the outcome."""
        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        new = decode(topic, payload, now, prefix=PREFIX, max_bytes=MAX_BYTES)
        old = decode_reference(topic, payload, now, prefix=PREFIX, max_bytes=MAX_BYTES)
        assert type(new) is type(old), (topic, payload, old, new)
        if isinstance(old, Rejection):
            assert isinstance(new, Rejection)
            assert (new.reason, new.detail) == (old.reason, old.detail), (topic, payload)
            outcome = old.reason
        else:
            assert isinstance(new, Decoded) and isinstance(old, Decoded)
            assert new == old and new.topic == old.topic
            assert type(new.message) is type(old.message)
            assert new.message.model_dump() == old.message.model_dump()
            assert new.message.model_dump_json() == old.message.model_dump_json()
            if isinstance(new.message, RatingEvent):
                assert rating_line(new.message) == rating_line_before(old.message)  # type: ignore[arg-type]
            outcome = f"accepted_{new.topic.kind.value}"
        self.counts[outcome] += 1
        return outcome


def _hypothesis(strategy: st.SearchStrategy[tuple[str, bytes]], n: int, v: Verdicts) -> None:
    """Run `n` generated (topic, payload) cases through both decodes."""

    @settings(FUZZ, max_examples=n)
    @given(strategy)
    def check(msg: tuple[str, bytes]) -> None:
        v.check(*msg)

    check()


def test_fuzz_corpus_gets_the_same_verdict_from_both_decodes(
    record_property: Callable[[str, Any], None],
) -> None:
    """The corpus of every fuzz property that reaches decode, through old and new validation."""
    v = Verdicts()
    # The gateway property's corpus (4,500 cases) is compared where it is generated, in
    # tests/test_fuzz.py::test_gateway_decode_rejects_each_hostile_message_with_a_reason.
    # The server link property's corpus: every kind, command topics included.
    _hypothesis(messages(list(TopicKind)), 2500, v)
    # The end-to-end property's corpus: topics a client can publish to the gateway.
    wire = st.sampled_from(CONSUMED).flatmap(lambda k: st.tuples(wire_topics(k), PAYLOADS[k]))
    _hypothesis(wire, 2600, v)
    # Raw bytes and hostile topics, paired freely.
    _hypothesis(st.tuples(HOSTILE_TOPICS | whole_topics, raw_payloads), 1500, v)
    record_property("equivalence_outcomes", dict(v.counts))
    print(json.dumps({"equivalence": "fuzz", "cases": v.counts.total(), **v.counts}))
    assert v.counts.total() >= 6_500
    assert set(v.counts) >= GATEWAY_REASONS, GATEWAY_REASONS - set(v.counts)
    assert {f"accepted_{k.value}" for k in CONSUMED} <= set(v.counts)


def _rating(**changes: Any) -> dict[str, Any]:
    """A valid rating document of the fuzz device, with `changes` applied."""
    doc = dict(_variants(TopicKind.RATING)[0], id=str(uuid.UUID(int=7)), seq=7, ts=BASE_TS)
    doc.update(changes)
    return doc


def test_fixed_samples_and_valid_messages_get_the_same_verdict() -> None:
    """Every fixed hostile value of the fuzz test in every field, and every valid variant."""
    v = Verdicts()
    for kind in TopicKind:  # the seeded valid documents of every kind, on their own topic
        for i, doc in enumerate(_variants(kind)):
            doc = dict(doc, id=str(uuid.UUID(int=i + 1)), ts=BASE_TS + i, seq=i + 1)
            if kind is TopicKind.STATUS:
                doc.pop("id"), doc.pop("seq")
            elif kind is not TopicKind.RATING:
                doc.pop("seq")
            topic = f"{PREFIX}/v1/{HALL}/{FUZZ_DEVICE}/{kind.value}"
            v.check(topic, json.dumps(doc).encode())
    values: list[Any] = [*TRICKY_TEXT, *ODD_STRINGS, *ODD_NUMBERS, None, True, [], {}, ["a"]]
    keys = [*_rating(), "project", "extra"]
    for key in keys:  # every odd value in every key of a rating
        for value in values:
            text = json.dumps(_rating(**{key: value}), ensure_ascii=False)
            v.check(RATING_TOPIC, text.encode("utf-8", "surrogatepass"))
    for key, edges in EDGES.items():
        for value in edges:
            v.check(RATING_TOPIC, json.dumps(_rating(**{key: value})).encode())
    valid = json.dumps(_rating()).encode()
    for topic in [*WHOLE_TOPICS, f"{PREFIX}/v1/{HALL}/k-9999/rating"]:
        v.check(topic, valid)
    for raw in RAW_SAMPLES:
        v.check(RATING_TOPIC, raw)
    now = BASE_TS + 1_000_000
    for ts in (now + 5 * 60_000, now + 5 * 60_000 + 1, 1_577_836_800_000, 1_577_836_799_999):
        v.check(RATING_TOPIC, json.dumps(_rating(ts=ts)).encode(), now)
    print(json.dumps({"equivalence": "fixed", "cases": v.counts.total(), **v.counts}))
    assert v.counts["accepted_rating"] >= 60 and v.counts["unknown_key"] >= 1
    assert set(v.counts) >= GATEWAY_REASONS - {"too_large"}, GATEWAY_REASONS - set(v.counts)


def test_bench_ratings_decode_alike_and_build_the_same_lines() -> None:
    """The bench's ratings (a quarter with `project`): accepted alike, the same line bytes."""
    now = time.time_ns() // 1_000_000
    v = Verdicts()
    for topic, payload in bench_messages(400, now):
        assert v.check(topic, payload, now) == "accepted_rating"


def test_stages_bench_reports_every_stage_before_and_after(influx: Influxd) -> None:
    """`python -m bench.stages` at a small size: JSON last line, every stage, nothing lost."""
    row = run_stages(600, rounds=1, influx_url=influx.url)
    stages = {"receive", "decode", "validate", "line", "write", "ack", "total"}
    assert set(row["us_per_rating_before"]) == set(row["us_per_rating_after"]) == stages
    assert row["same_output"] is True
    assert row["accepted"] == row["stored"] == 600
    assert row["ratings_per_s_after"] > 0 and row["ratings_per_s_before"] > 0
    out = subprocess.run(
        [sys.executable, "-m", "bench.stages", "--ratings", "300", "--rounds", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.strip()
    last = json.loads(out.splitlines()[-1])
    assert last["bench"] == "stages" and last["stored"] == 300 and last["same_output"] is True
    assert last["setup_s"]["influxd_start"] > 0
