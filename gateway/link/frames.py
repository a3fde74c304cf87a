"""Sans-I/O framing over the `mqtt5` codec: many packets per read, many PUBACKs per send."""

import struct
from typing import NamedTuple

import mqtt5


class Malformed(Exception):
    """The broker sent bytes that are not a valid MQTT 5 packet."""


class Message(NamedTuple):
    """One PUBLISH from the broker; `packet_id` 0 means QoS 0 (nothing to acknowledge)."""

    topic: str
    payload: bytes
    packet_id: int
    duplicate: bool


def frame_length(data: memoryview) -> int | None:
    """Bytes of the first packet in `data` (fixed header included); None while its header is cut."""
    length = 0
    shift = 0
    for i in range(1, min(len(data), 5)):
        byte = data[i]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return 1 + i + length
        shift += 7
    if len(data) >= 5:
        raise Malformed("remaining length longer than four bytes")
    return None


def parse(data: memoryview, max_packet_size: int) -> tuple[list[Message], list[mqtt5.Packet], int]:
    """Split `data` into PUBLISH messages, other packets, and the count of bytes consumed.

    A packet cut at the end of `data` stays unconsumed; anything the codec refuses, or a packet
    longer than `max_packet_size`, raises Malformed.
    """
    messages: list[Message] = []
    others: list[mqtt5.Packet] = []
    read = mqtt5.read
    publish = mqtt5.PublishPacket
    append = messages.append
    pos = 0
    end = len(data)
    while pos < end:
        try:
            packet, size = read(data[pos:])
        except IndexError:  # the codec's "not enough bytes"
            rest = data[pos:]
            need = frame_length(rest)
            if need is not None and (need > max_packet_size or need <= len(rest)):
                raise Malformed(f"packet of {need} bytes cannot be decoded") from None
            break
        except ValueError as exc:  # the codec's "this is not MQTT 5"
            raise Malformed(str(exc)) from None
        pos += size
        if type(packet) is publish:
            if packet.qos == mqtt5.QoS.EXACTLY_ONCE:
                raise Malformed("QoS 2 PUBLISH on a QoS 1 subscription")
            if not packet.topic:
                raise Malformed("PUBLISH with a topic alias we never allowed")
            append(Message(packet.topic, packet.payload, packet.packet_id or 0, packet.duplicate))
        else:
            others.append(packet)
    return messages, others, pos


def pubacks(packet_ids: list[int]) -> bytes:
    """PUBACK (success, no properties) for every id, as one buffer: 4 bytes each."""
    return struct.pack(f">{len(packet_ids)}I", *[0x40020000 | i for i in packet_ids])
