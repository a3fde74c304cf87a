"""Hostile and malformed input: each bad message is kept and counted, valid ones stored once."""

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from devstack.services import Influxd, Mosquitto
from gateway.deadletters import DeadLetterStore
from tests.support import (
    GatewayProcess,
    distinct_ids,
    rating_count,
    rating_doc,
    raw_client,
    wait_until,
)

HALL, DEVICE = "hz-civic", "k-0001"
TOPIC = f"wr/v1/{HALL}/{DEVICE}/rating"


def rating(seq: int, **changes: Any) -> dict[str, Any]:
    """A valid RatingEvent document for DEVICE."""
    return rating_doc(HALL, DEVICE, seq, **changes)


def rejected(gw: GatewayProcess) -> dict[str, int]:
    """The gateway's dead letters by reason, from its metrics."""
    return {
        k.split('reason="')[1].rstrip('"}'): int(v)
        for k, v in gw.metrics().items()
        if k.startswith("windowrate_gateway_messages_rejected_total{")
    }


def test_hostile_messages_are_kept_and_counted(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """Every kind of bad message lands under its reason; the stream keeps flowing."""
    gw = GatewayProcess(tmp_path / "gateway", broker.port, influx.url)
    gw.start()
    pub = raw_client(broker.port)
    now = int(time.time() * 1000)
    unknown = rating(999)
    unknown["extra"] = 1
    wrong_type = rating(999, level="5")
    bad: list[tuple[str, str, bytes]] = [
        ("bad_json", TOPIC, b'{"v": 1, "id": '),
        ("bad_json", TOPIC, b"\xff\xfe not utf-8"),
        ("bad_json", TOPIC, b""),
        ("unknown_key", TOPIC, json.dumps(unknown).encode()),
        ("invalid_field", TOPIC, json.dumps(wrong_type).encode()),
        ("invalid_field", TOPIC, json.dumps(rating(-1)).encode()),
        ("topic_mismatch", f"wr/v1/{HALL}/k-9999/rating", json.dumps(rating(999)).encode()),
        ("topic_mismatch", f"wr/v1/other-hall/{DEVICE}/rating", json.dumps(rating(999)).encode()),
        ("level_out_of_scale", TOPIC, json.dumps(rating(999, level=6)).encode()),
        ("level_out_of_scale", TOPIC, json.dumps(rating(999, scale=3, level=4)).encode()),
        ("ts_before_2020", TOPIC, json.dumps(rating(999, ts=1_560_000_000_000)).encode()),
        ("ts_in_future", TOPIC, json.dumps(rating(999, ts=now + 3_600_000)).encode()),
        ("too_large", TOPIC, b'{"v":1,"pad":"' + b"x" * 1_000_000 + b'"}'),
        ("bad_topic", f"wr/v1/Bad_Hall/{DEVICE}/rating", json.dumps(rating(999)).encode()),
    ]
    # Valid ratings interleaved with the bad ones: seq 1 … 200, then seq 1 resent 100 times.
    valid = [rating(seq) for seq in range(1, 201)]
    for i, doc in enumerate(valid):
        pub.publish(TOPIC, json.dumps(doc), qos=1)
        if i % 10 == 0 and i // 10 < len(bad):
            _reason, topic, payload = bad[i // 10]
            pub.publish(topic, payload, qos=1)
    resent = json.dumps(valid[0])
    for _ in range(100):
        pub.publish(TOPIC, resent, qos=1).wait_for_publish(5)
    # A different rating claiming an already stored id: forged, never overwrites.
    forged = dict(valid[1], level=1)
    pub.publish(TOPIC, json.dumps(forged), qos=1).wait_for_publish(5)

    expected: dict[str, int] = {}
    for reason, _t, _p in bad:
        expected[reason] = expected.get(reason, 0) + 1
    expected["id_conflict"] = 1

    wait_until(lambda: rejected(gw) == expected, 30, what=f"rejections {expected}")
    wait_until(lambda: gw.metrics()["windowrate_gateway_duplicates_total"] == 100, 30)
    assert rating_count(influx.url) == 200
    assert distinct_ids(influx.url) == 200
    assert gw.metrics()["windowrate_gateway_ratings_written_total"] == 200

    # Still keeping up after all that: a fresh rating goes straight through.
    pub.publish(TOPIC, json.dumps(rating(201)), qos=1).wait_for_publish(5)
    wait_until(lambda: rating_count(influx.url) == 201, 15)
    pub.loop_stop()
    pub.disconnect()
    gw.stop()

    # Every bad message is kept whole, with its reason, for an operator to recover.
    store = DeadLetterStore(tmp_path / "gateway" / "dead_letters.sqlite")
    kept = list(store.iter())
    assert len(kept) == sum(expected.values())
    assert store.counts() == expected
    payloads = {(d.reason, d.payload) for d in kept}
    for reason, _topic, payload in bad:
        assert (reason, payload) in payloads
    store.close()

    # The operator's view of the same: one JSON line per kept message, with its reason.
    out = subprocess.run(
        [sys.executable, "-m", "windowrate", "gateway", "dead-letters", "--json"],
        env=gw.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    listed = [json.loads(line) for line in out]
    assert len(listed) == sum(expected.values())
    assert {d["reason"] for d in listed} == set(expected)


def test_qos0_and_unrelated_topics_do_not_stop_the_stream(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """QoS 0 garbage and foreign topics never block valid ratings."""
    gw = GatewayProcess(tmp_path / "gateway", broker.port, influx.url)
    gw.start()
    pub = raw_client(broker.port, "noisy")
    for i in range(500):
        pub.publish(TOPIC, f"garbage {i}", qos=0)
        pub.publish("wr/v1/x/y/cmd", "not for the gateway", qos=1)
    for seq in range(1, 51):
        pub.publish(TOPIC, json.dumps(rating(seq, id=str(uuid.uuid4()))), qos=1)
    wait_until(lambda: rating_count(influx.url) == 50, 30)
    m = gw.metrics()
    assert m['windowrate_gateway_messages_rejected_total{reason="bad_json"}'] == 500
    pub.loop_stop()
    pub.disconnect()
    gw.stop()


def test_id_conflict_is_detected_after_a_gateway_restart(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """An id reused for another rating after the gateway crashed and restarted: a dead letter."""
    gw = GatewayProcess(tmp_path / "gateway", broker.port, influx.url)
    gw.start()
    pub = raw_client(broker.port)
    first = rating(1)
    pub.publish(TOPIC, json.dumps(first), qos=1).wait_for_publish(5)
    wait_until(lambda: rating_count(influx.url) == 1, 15, what="first rating stored")
    wait_until(lambda: gw.metrics()["windowrate_gateway_ratings_written_total"] == 1, 15)
    gw.kill()  # a crash: nothing in memory survives
    gw.start()
    pub.publish(TOPIC, json.dumps(first), qos=1).wait_for_publish(5)  # a redelivery
    forged = dict(first, level=1)  # the same id, another rating
    pub.publish(TOPIC, json.dumps(forged), qos=1).wait_for_publish(5)
    wait_until(lambda: rejected(gw) == {"id_conflict": 1}, 15, what="the conflict kept")
    wait_until(lambda: gw.metrics()["windowrate_gateway_duplicates_total"] == 1, 15)
    pub.loop_stop()
    pub.disconnect()
    gw.stop()
    assert rating_count(influx.url) == 1
    store = DeadLetterStore(tmp_path / "gateway" / "dead_letters.sqlite")
    (letter,) = store.iter()
    assert letter.reason == "id_conflict" and json.loads(letter.payload) == forged
    store.close()
