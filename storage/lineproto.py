"""Line protocol for rating, event and status points (the schema is in `storage.schema`).

Hand-written rather than influxdb_client's Point: `bench/lineproto.py` times both in one run
(`windowrate bench lineproto`); `tests/test_lineproto.py` checks that both give the same bytes.
"""

from protocol.messages import DeviceStatus, RatingEvent, ServiceEvent
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


def rating_line(ev: RatingEvent) -> str:
    """Return the `rating` point of one RatingEvent."""
    fields = [
        f"seq={ev.seq}i",
        f"id={_str(str(ev.id))}",
        f"scale={ev.scale}i",
        f"input={_str(ev.input)}",
        f"prompted={_bool(ev.prompted)}",
        f"clock_synced={_bool(ev.clock_synced)}",
    ]
    if ev.staff is not None:
        fields.append(f"staff={_str(ev.staff)}")
    if ev.ticket is not None:
        fields.append(f"ticket={_str(ev.ticket)}")
    if ev.item is not None:
        fields.append(f"item={_str(ev.item)}")
    if ev.reasons:
        fields.append(f"reasons={_str(','.join(ev.reasons))}")
    return (
        f"{MEASUREMENT_RATING},device={_tag(ev.device)},hall={_tag(ev.hall)},level={ev.level},"
        f"window={_tag(ev.window)} {','.join(fields)} {rating_time_ns(ev.ts, ev.seq)}"
    )


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
