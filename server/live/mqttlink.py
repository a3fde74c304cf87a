"""The server's one MQTT client: hears ratings, events and status; sends commands and configs."""

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from common.mqtt import MqttSettings, guarded, make_client
from protocol.decode import Rejection, decode, parse_topic
from protocol.messages import Command, DeviceConfig, DeviceStatus, RatingEvent, ServiceEvent
from protocol.topics import Topic, TopicKind, subscription

log = logging.getLogger(__name__)

LISTENED = (TopicKind.RATING, TopicKind.EVENT, TopicKind.STATUS)
# Log line of a dropped message: kind, topic, reason code (as the gateway's), detail.
DROPPED = "dropped %s message on %s: %s (%s)"


class MqttLink:
    """Plain (not shared) subscriptions to every device's rating, event and status topics."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        on_rating: Callable[[RatingEvent], None],
        on_event: Callable[[ServiceEvent], None],
        on_status: Callable[[DeviceStatus], None],
        on_connect: Callable[[], None] | None = None,
        on_config: Callable[[str, str, bool], None] | None = None,
        client_id: str | None = None,
    ) -> None:
        """Prepare the client; start() connects in the background."""
        self.settings = settings
        self.on_rating = on_rating
        self.on_event = on_event
        self.on_status = on_status
        self.on_connected = on_connect
        # Told (hall, device, present) of each retained config on the broker, ours included.
        self.on_config = on_config
        self.client_id = client_id or f"wr-server-{uuid.uuid4().hex[:12]}"
        self.received: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()
        self._connected = threading.Event()
        self.client = make_client(settings, self.client_id)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        """True while connected to the broker."""
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background (retrying while the broker is down)."""
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=True,
        )
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected:
            self.client.disconnect()
        self.client.loop_stop()

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected; return True if so."""
        return self._connected.wait(timeout)

    def _topic(self, hall: str, device: str, kind: TopicKind) -> str:
        """Return a device topic."""
        return str(Topic(hall, device, kind, self.settings.prefix))

    def send_command(self, hall: str, device: str, cmd: Command, timeout: float = 5.0) -> bool:
        """Publish a command at QoS 1; return True once the broker acknowledged it."""
        if not self.connected:
            return False
        info = self.client.publish(
            self._topic(hall, device, TopicKind.CMD), cmd.model_dump_json(), qos=1
        )
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            log.warning("command %s to %s/%s not sent: %s", cmd.cmd, hall, device, exc)
            return False
        return info.is_published()

    def publish_config(self, hall: str, device: str, config: DeviceConfig | None) -> bool:
        """Publish (or, with None, clear) a device's retained config at QoS 1; False if offline."""
        if not self.connected:
            return False
        payload = b"" if config is None else config.model_dump_json(exclude_none=True).encode()
        info = self.client.publish(
            self._topic(hall, device, TopicKind.CONFIG), payload, qos=1, retain=True
        )
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    # --- paho callbacks (network thread) ---

    @guarded
    def _on_connect(
        self,
        client: mqtt.Client,
        _u: Any,
        _f: Any,
        rc: ReasonCode,
        _p: Properties | None = None,
    ) -> None:
        """Subscribe and report the connection."""
        if rc.is_failure:
            log.warning("broker refused the server's connection: %s", rc)
            return
        kinds = [*LISTENED, TopicKind.CONFIG] if self.on_config is not None else LISTENED
        client.subscribe([(subscription(k, self.settings.prefix), 1) for k in kinds])
        self._connected.set()
        log.info("server MQTT link connected to %s:%s", self.settings.host, self.settings.port)
        if self.on_connected is not None:
            self.on_connected()

    @guarded
    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        """Note the lost connection (paho reconnects)."""
        if self._connected.is_set():
            log.warning("server MQTT link lost: %s", rc)
        self._connected.clear()

    @guarded
    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """Decode a message as the gateway does (protocol.decode); hand it on or count it."""
        try:
            topic_str = msg.topic
        except UnicodeDecodeError as exc:  # paho decodes the topic lazily
            self._drop("topic", "<undecodable>", Rejection("bad_topic", str(exc)))
            return
        topic = parse_topic(topic_str, self.settings.prefix)
        if isinstance(topic, Topic):
            if topic.kind is TopicKind.CONFIG:
                if self.on_config is not None:
                    self.on_config(topic.hall, topic.device, bool(msg.payload))
                return
            if topic.kind not in LISTENED:
                return
            if topic.kind is TopicKind.STATUS and not msg.payload:
                return  # a cleared retained status
        now_ms = time.time_ns() // 1_000_000
        res = decode(topic_str, msg.payload, now_ms, prefix=self.settings.prefix)
        if isinstance(res, Rejection):
            self._drop(topic.kind.value if isinstance(topic, Topic) else "topic", topic_str, res)
            return
        doc = res.message
        self.received[res.topic.kind.value] += 1
        if isinstance(doc, RatingEvent):
            self.on_rating(doc)
        elif isinstance(doc, ServiceEvent):
            self.on_event(doc)
        else:
            self.on_status(doc)

    def _drop(self, kind: str, topic: str, why: Rejection) -> None:
        """Count and log a message that is not handed on (the gateway rejects it too)."""
        self.invalid[kind] += 1
        log.warning(DROPPED, kind, topic[:200], why.reason, why.detail)
