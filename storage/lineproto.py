"""Line protocol for rating, event and status points (the schema is in `storage.schema`).

Hand-written rather than influxdb_client's Point: `bench/lineproto.py` times both in one run
(`windowrate bench lineproto`); `tests/test_lineproto.py` checks that both give the same bytes.
"""

import re

from protocol.messages import (
    REASON_PATTERN,
    WINDOW_PATTERN,
    DeviceStatus,
    RatingEvent,
    ServiceEvent,
)
from protocol.topics import ID_PATTERN
from storage.schema import (
    MEASUREMENT_EVENT,
    MEASUREMENT_RATING,
    MEASUREMENT_STATUS,
    event_time_ns,
    rating_time_ns,
)


def _tag(value: str) -> str:
    """Escape a tag value."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _str(value: str) -> str:
    """Quote and escape a string field value."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bool(value: bool) -> str:
    """Format a boolean field value."""
    return "true" if value else "false"


def _never_escaped(pattern: str) -> bool:
    """True if no string matching `pattern` holds a character line protocol escapes."""
    probe = re.compile(pattern)
    return not any(
        probe.fullmatch(text)
        for ch in '\\,= "\n'
        for text in (ch, "a" + ch, "a" + ch + "a", ch + "a", "0" + ch, "0" + ch + "0")
    )


# Ids, windows and reason codes of a validated RatingEvent hold no character that line
# protocol escapes (probed here with the patterns protocol.messages validates with;
# tests/test_lineproto.py compares generated ratings with influxdb_client's escaping), and
# `input` is one of three plain words, so rating_line writes them as they are. With one
# f-string instead of a list join this takes 4.90 µs per rating instead of 5.98
# (`python -m bench.stages --ratings 100000`, `line` after/before in one run).
if not all(map(_never_escaped, (ID_PATTERN, WINDOW_PATTERN, REASON_PATTERN))):
    raise RuntimeError("an id, window or reason pattern admits a line-protocol special")


def rating_line(ev: RatingEvent, rid: str | None = None) -> str:
    """Return the `rating` point of one RatingEvent (validated: its ids need no escaping).

    `rid` is `str(ev.id)` where the caller has it already (UUID.__str__ is Python code).
    """
    line = (
        f"{MEASUREMENT_RATING},device={ev.device},hall={ev.hall},level={ev.level},"
        f'window={ev.window} seq={ev.seq}i,id="{rid or ev.id}",scale={ev.scale}i,'
        f'input="{ev.input}",'
        f"prompted={'true' if ev.prompted else 'false'},"
        f"clock_synced={'true' if ev.clock_synced else 'false'}"
    )
    if ev.staff is not None:
        line += f",staff={_str(ev.staff)}"
    if ev.ticket is not None:
        line += f",ticket={_str(ev.ticket)}"
    if ev.item is not None:
        line += f",item={_str(ev.item)}"
    if ev.reasons:
        line += f',reasons="{",".join(ev.reasons)}"'
    if ev.project is not None:
        line += f",project={_str(ev.project)}"
    return f"{line} {rating_time_ns(ev.ts, ev.seq)}"


def event_line(ev: ServiceEvent) -> str:
    """Return the `event` point of one ServiceEvent (idempotent on redelivery)."""
    fields = [f"id={_str(str(ev.id))}", f"clock_synced={_bool(ev.clock_synced)}"]
    for name in ("window", "staff", "ticket", "item"):
        value = getattr(ev, name)
        if value is not None:
            fields.append(f"{name}={_str(value)}")
    return (
        f"{MEASUREMENT_EVENT},device={_tag(ev.device)},hall={_tag(ev.hall)},type={_tag(ev.type)} "
        f"{','.join(fields)} {event_time_ns(ev.ts, ev.id.int)}"
    )


def status_line(st: DeviceStatus, received_ns: int) -> str:
    """Return the `device_status` point; its time is when the gateway received it."""
    fields = [f"state={_str(st.state)}"]
    if st.ts is not None:
        fields.append(f"device_ts={st.ts}i")
    if st.window is not None:
        fields.append(f"window={_str(st.window)}")
    if st.last_seq is not None:
        fields.append(f"last_seq={st.last_seq}i")
    if st.backlog is not None:
        fields.append(f"backlog={st.backlog}i")
    if st.clock_synced is not None:
        fields.append(f"clock_synced={_bool(st.clock_synced)}")
    if st.version is not None:
        fields.append(f"version={_str(st.version)}")
    if st.board is not None:
        fields.append(f"board_connected={_bool(st.board.connected)}")
        if st.board.id is not None:
            fields.append(f"board_id={_str(st.board.id)}")
        if st.board.firmware is not None:
            fields.append(f"board_firmware={_str(st.board.firmware)}")
    return (
        f"{MEASUREMENT_STATUS},device={_tag(st.device)},hall={_tag(st.hall)} "
        f"{','.join(fields)} {received_ns}"
    )
