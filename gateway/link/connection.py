"""One MQTT 5 connection of the gateway: CONNECT, SUBSCRIBE, read batches, send PUBACKs, keepalive.

Blocking socket calls in the caller's thread (see `session.py` for why a thread and not
asyncio). Every way the connection can end raises a `LinkError` saying why; `session.Link`
turns that into a log line, a counter and a reconnect.
"""

import logging
import selectors
import socket
import ssl
import time
from dataclasses import dataclass

import mqtt5

from common.mqtt import MqttSettings
from gateway.link.frames import Malformed, Message, parse, pubacks

log = logging.getLogger(__name__)

RECV_BYTES = 1 << 18
# CONNACK reasons that another attempt a second later cannot fix: retry slowly. (A tuple:
# the codec's enums are not hashable.)
_CONFIG_REASONS = (
    mqtt5.ConnAckReasonCode.CLIENT_ID_NOT_VALID,
    mqtt5.ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD,
    mqtt5.ConnAckReasonCode.NOT_AUTHORIZED,
    mqtt5.ConnAckReasonCode.BANNED,
    mqtt5.ConnAckReasonCode.BAD_AUTHENTICATION_METHOD,
)


class LinkError(Exception):
    """The connection ended or could not start; `slow` asks for the long retry delay."""

    slow = False


class Refused(LinkError):
    """The broker refused the login or a subscription, or TLS refused the broker."""

    def __init__(self, message: str, *, slow: bool) -> None:
        """Keep whether retrying soon can help."""
        super().__init__(message)
        self.slow = slow


class ServerDisconnect(LinkError):
    """The broker sent DISCONNECT with a reason code."""

    def __init__(self, packet: mqtt5.DisconnectPacket) -> None:
        """Keep the reason code; a session taken over is retried slowly (no tug of war)."""
        code = packet.reason_code
        reason = f" ({packet.reason_str})" if packet.reason_str else ""
        super().__init__(f"broker sent DISCONNECT {code.value} {code.name}{reason}")
        self.reason_code = code
        self.slow = code == mqtt5.DisconnectReasonCode.SESSION_TAKEN_OVER


class MalformedPacket(LinkError):
    """The broker sent something that is not MQTT 5 or breaks the protocol."""


ONLINE = "online"
OFFLINE = "offline"
_SUBSCRIBE_ID = 1
_PRESENCE_ID = 2


@dataclass(frozen=True)
class ConnectOptions:
    """What the gateway asks of its session.

    `presence`: a topic on which the connection carries a retained Last Will
    "offline {instance}" and publishes a retained "online {instance}" once connected, so a
    standby knows who holds the session. `end_when_lost`: the link ends (no reconnect) when an
    established connection ends, so its owner decides (Mosquitto 2.0.11 closes a session taken
    over without DISCONNECT 0x8E: measured, tests/test_gateway_link.py).
    """

    client_id: str
    topics: tuple[str, ...]
    receive_max: int = 20_000
    session_expiry_s: int = 7 * 86400
    max_packet_size: int = 4 << 20
    connect_timeout_s: float = 10.0
    clean_start: bool = False
    presence: str | None = None
    instance: str = ""
    end_when_lost: bool = False

    def presence_payload(self, state: str) -> bytes:
        """The presence message: the state and who says it."""
        return f"{state} {self.instance}".encode()


class Connection:
    """A connected, subscribed MQTT 5 session; `poll` returns the next batch of PUBLISHes."""

    def __init__(
        self, settings: MqttSettings, options: ConnectOptions, wake: socket.socket
    ) -> None:
        """Prepare; `wake` becomes readable when the session has PUBACKs to send."""
        self.settings = settings
        self.options = options
        self.wake = wake
        self.sock: socket.socket | None = None
        self.selector = selectors.DefaultSelector()
        self.keepalive_s = float(settings.keepalive_s)
        self.session_present = False
        # Packet id → PUBLISHes received under it and not yet acknowledged. A count, not a
        # set: Mosquitto 2.0.11, once past the Receive Maximum (see docs/delivery.md), has
        # more than 65,535 messages in flight to a gateway draining a backlog and reuses ids
        # still unacknowledged; each copy needs its own PUBACK, or the broker keeps it queued
        # (a 200,000 backlog left 114,465 in the session with a set).
        self.unacked: dict[int, int] = {}
        self.unacked_total = 0
        self._early = b""
        self._rest = b""
        self.subscribed = False
        self._last_rx = self._last_tx = time.monotonic()
        self._ping_sent: float | None = None

    # --- opening ---

    def open(self) -> None:
        """Connect (TLS when a CA is set), log in and send SUBSCRIBE; raise LinkError if refused."""
        s, o = self.settings, self.options
        try:
            raw = socket.create_connection((s.host, s.port), timeout=o.connect_timeout_s)
        except OSError as exc:
            raise LinkError(f"cannot reach broker {s.host}:{s.port}: {exc}") from None
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = raw
        if s.tls_ca:
            try:
                context = ssl.create_default_context(cafile=s.tls_ca)
                self.sock = context.wrap_socket(raw, server_hostname=s.host)
            except ssl.SSLCertVerificationError as exc:
                msg = f"TLS: broker certificate refused: {exc.verify_message}"
                raise Refused(msg, slow=True) from None
            except (OSError, ssl.SSLError) as exc:
                raise LinkError(f"TLS handshake with {s.host}:{s.port} failed: {exc}") from None
        password = s.password.get_secret_value().encode() if s.password else None
        will = None
        if o.presence:
            will = mqtt5.Will(
                o.presence,
                payload=o.presence_payload(OFFLINE),
                qos=mqtt5.QoS.AT_LEAST_ONCE,
                retain=True,
            )
        connect = mqtt5.ConnectPacket(
            o.client_id,
            username=s.username,
            password=password,
            clean_start=o.clean_start,
            will=will,
            keep_alive=s.keepalive_s,
            session_expiry_interval=o.session_expiry_s,
            receive_max=o.receive_max,
            max_packet_size=o.max_packet_size,
            request_problem_info=True,
        )
        self._send(connect.write())
        self._on_connack(self._read_connack())
        if o.presence:
            online = mqtt5.PublishPacket(
                o.presence,
                o.presence_payload(ONLINE),
                qos=mqtt5.QoS.AT_LEAST_ONCE,
                retain=True,
                packet_id=_PRESENCE_ID,
            )
            self._send(online.write())
        filters = [
            mqtt5.TopicFilter(
                t,
                max_qos=mqtt5.QoS.AT_LEAST_ONCE,
                retain_handling=mqtt5.RetainHandling.SEND_IF_SUBSCRIPTION_NOT_EXISTS,
            )
            for t in o.topics
        ]
        self._send(mqtt5.SubscribePacket(_SUBSCRIBE_ID, filters).write())
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.selector.register(self.wake, selectors.EVENT_READ)

    def _read_connack(self) -> mqtt5.ConnAckPacket:
        """Wait for the CONNACK; bytes after it stay for `poll`."""
        assert self.sock is not None
        self.sock.settimeout(self.options.connect_timeout_s)
        data = b""
        while True:
            try:
                chunk = self.sock.recv(RECV_BYTES)
            except OSError as exc:
                raise LinkError(f"no CONNACK: {exc}") from None
            if not chunk:
                raise LinkError("broker closed the connection before CONNACK")
            data += chunk
            try:
                packet, size = mqtt5.read(memoryview(data))
            except IndexError:
                if len(data) > 1024:
                    raise MalformedPacket("CONNACK longer than 1 KiB") from None
                continue
            except ValueError as exc:
                raise MalformedPacket(f"undecodable CONNACK: {exc}") from None
            if not isinstance(packet, mqtt5.ConnAckPacket):
                raise MalformedPacket(f"expected CONNACK, got {type(packet).__name__}")
            self._early = data[size:]
            self.sock.settimeout(max(self.keepalive_s, 1.0))
            return packet

    def _on_connack(self, ack: mqtt5.ConnAckPacket) -> None:
        """Accept the session or raise Refused with the broker's reason."""
        code = ack.reason_code
        if code != mqtt5.ConnAckReasonCode.SUCCESS:
            reason = f" ({ack.reason_str})" if ack.reason_str else ""
            raise Refused(
                f"broker refused login as {self.settings.username!r} with client id "
                f"{self.options.client_id!r}: CONNACK {code.value} {code.name}{reason}",
                slow=code in _CONFIG_REASONS,
            )
        self.session_present = ack.session_present
        if ack.server_keep_alive is not None:
            self.keepalive_s = float(ack.server_keep_alive)
        if self.sock is not None:
            self.sock.settimeout(max(self.keepalive_s, 1.0))

    # --- serving ---

    def poll(self, timeout: float) -> list[Message]:
        """Wait up to `timeout` s for data; return every PUBLISH it held (may be empty).

        Returns early (with no messages) when `wake` is readable. Keeps the connection alive
        and raises LinkError when it ends.
        """
        sock = self.sock
        assert sock is not None
        now = time.monotonic()
        self._keepalive(now)
        timeout = min(timeout, self._keepalive_due(now) - now)
        if self._early:  # bytes that came with the CONNACK
            data, self._early = self._early, b""
            return self._take(data)
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if not pending:
            events = self.selector.select(max(timeout, 0.0))
            if not any(key.fileobj is sock for key, _ in events):
                self._keepalive(time.monotonic())
                return []
        try:
            data = sock.recv(RECV_BYTES)
            if isinstance(sock, ssl.SSLSocket):
                while sock.pending():
                    data += sock.recv(RECV_BYTES)
        except TimeoutError:
            return []
        except OSError as exc:
            raise LinkError(f"connection lost: {exc}") from None
        if not data:
            raise LinkError("broker closed the connection")
        return self._take(data)

    def _take(self, data: bytes) -> list[Message]:
        """Parse `data` after the bytes kept from the last read; handle non-PUBLISH packets."""
        if self._rest:
            data = self._rest + data
        self._last_rx = time.monotonic()
        self._ping_sent = None
        try:
            messages, others, used = parse(memoryview(data), self.options.max_packet_size)
        except Malformed as exc:
            raise MalformedPacket(f"malformed packet from broker: {exc}") from None
        self._rest = data[used:]
        for packet in others:
            self._on_packet(packet)
        if messages:
            unacked = self.unacked
            for m in messages:
                if m.packet_id:
                    unacked[m.packet_id] = unacked.get(m.packet_id, 0) + 1
                    self.unacked_total += 1
        return messages

    def _on_packet(self, packet: mqtt5.Packet) -> None:
        """Handle SUBACK, PUBACK, PINGRESP and DISCONNECT; anything else breaks the protocol."""
        if isinstance(packet, mqtt5.PingRespPacket):
            return
        if isinstance(packet, mqtt5.SubAckPacket) and packet.packet_id == _SUBSCRIBE_ID:
            if not self.subscribed:
                self._on_suback(packet)
            return
        if (
            isinstance(packet, mqtt5.PubAckPacket)
            and packet.packet_id == _PRESENCE_ID
            and self.options.presence
        ):
            if packet.reason_code not in (
                mqtt5.PubAckReasonCode.SUCCESS,
                mqtt5.PubAckReasonCode.NO_MATCHING_SUBSCRIBERS,
            ):  # not fatal: ratings still flow; only a standby cannot see us
                log.error(
                    "broker refused the presence message on %s: %s",
                    self.options.presence,
                    packet.reason_code.name,
                )
            return
        if isinstance(packet, mqtt5.DisconnectPacket):
            raise ServerDisconnect(packet)
        raise MalformedPacket(f"unexpected {type(packet).__name__} from broker")

    def _on_suback(self, packet: mqtt5.SubAckPacket) -> None:
        """Every filter must be granted QoS 1: QoS 0 or a failure would lose ratings."""
        refused = [
            f"{topic}: {code.name}"
            for topic, code in zip(self.options.topics, packet.reason_codes, strict=False)
            if code != mqtt5.SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE
        ]
        if refused or len(packet.reason_codes) != len(self.options.topics):
            reason = f" ({packet.reason_str})" if packet.reason_str else ""
            raise Refused(f"broker refused subscriptions {refused}{reason}", slow=True)
        self.subscribed = True
        log.info("subscribed to %s at QoS 1", ", ".join(self.options.topics))

    def _keepalive_due(self, now: float) -> float:
        """When the keepalive next needs attention (a PINGREQ or a verdict on one)."""
        if self._ping_sent is not None:
            return self._ping_sent + self.keepalive_s
        return min(self._last_rx, self._last_tx) + self.keepalive_s

    def _keepalive(self, now: float) -> None:
        """Send PINGREQ when quiet for a keepalive; no answer within another one: broker dead."""
        if self._ping_sent is not None:
            if now - self._ping_sent >= self.keepalive_s:
                raise LinkError(f"no PINGRESP within {self.keepalive_s:g} s: broker unreachable")
            return
        if now - min(self._last_rx, self._last_tx) >= self.keepalive_s:
            self._send(mqtt5.PingReqPacket().write())
            self._ping_sent = now

    def send_acks(self, packet_ids: list[int]) -> int:
        """PUBACK each id still unacknowledged here, in the given order, in one send."""
        unacked = self.unacked
        fresh: list[int] = []
        for i in packet_ids:
            n = unacked.get(i, 0)
            if n:
                fresh.append(i)
                if n == 1:
                    del unacked[i]
                else:
                    unacked[i] = n - 1
        if fresh:
            self.unacked_total -= len(fresh)
            self._send(pubacks(fresh))
        return len(fresh)

    def _send(self, data: bytes) -> None:
        """Write all of `data` or raise LinkError."""
        assert self.sock is not None
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise LinkError(f"connection lost while sending: {exc}") from None
        self._last_tx = time.monotonic()

    # --- closing ---

    def close(self, reason: mqtt5.DisconnectReasonCode | None = None) -> None:
        """Send DISCONNECT with `reason` (best effort) and close; the broker keeps the session."""
        self.selector.close()
        if self.sock is None:
            return
        if reason is not None:
            try:
                self.sock.settimeout(1.0)
                self.sock.sendall(mqtt5.DisconnectPacket(reason_code=reason).write())
            except OSError:
                pass
        self.sock.close()
        self.sock = None
