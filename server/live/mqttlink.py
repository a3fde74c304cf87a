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
from pydantic import ValidationError

from common.mqtt import MqttSettings, guarded, make_client
from protocol.clock import TsVerdict, check_ts
from protocol.messages import Command, DeviceConfig, DeviceStatus, RatingEvent, ServiceEvent
from protocol.topics import Topic, TopicError, TopicKind, subscription

log = logging.getLogger(__name__)

MAX_PAYLOAD = 64 * 1024
LISTENED = (TopicKind.RATING, TopicKind.EVENT, TopicKind.STATUS)


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
        """Validate a message against the protocol and hand it on; count and drop a bad one."""
        try:
            topic = Topic.parse(msg.topic, self.settings.prefix)
        except (TopicError, UnicodeDecodeError) as exc:  # paho decodes the topic lazily
            self.invalid["topic"] += 1
            log.warning("dropped message on bad topic: %s", exc)
            return
        kind = topic.kind.value
        if topic.kind is TopicKind.CONFIG:
            if self.on_config is not None:
                self.on_config(topic.hall, topic.device, bool(msg.payload))
            return
        if not msg.payload and topic.kind is TopicKind.STATUS:
            return  # a cleared retained status
        if len(msg.payload) > MAX_PAYLOAD:
            self.invalid[kind] += 1
            log.warning("dropped %s message of %d bytes on %s", kind, len(msg.payload), msg.topic)
            return
        try:
            doc: RatingEvent | ServiceEvent | DeviceStatus
            if topic.kind is TopicKind.RATING:
                doc = RatingEvent.model_validate_json(msg.payload)
            elif topic.kind is TopicKind.EVENT:
                doc = ServiceEvent.model_validate_json(msg.payload)
            elif topic.kind is TopicKind.STATUS:
                doc = DeviceStatus.model_validate_json(msg.payload)
            else:
                return
        except ValidationError as exc:
            self.invalid[kind] += 1
            log.warning(
                "dropped invalid %s message on %s: %s", kind, msg.topic, exc.errors()[0]["msg"]
            )
            return
        if doc.hall != topic.hall or doc.device != topic.device:
            self.invalid[kind] += 1
            log.warning("dropped %s message whose device does not match %s", kind, msg.topic)
            return
        if isinstance(doc, RatingEvent):
            verdict = check_ts(doc.ts, int(time.time() * 1000))
            if verdict is not TsVerdict.OK:  # the gateway keeps it as a dead letter, not a point
                self.invalid[kind] += 1
                log.warning("dropped rating %s on %s: %s", doc.id, msg.topic, verdict.value)
                return
        self.received[kind] += 1
        if isinstance(doc, RatingEvent):
            self.on_rating(doc)
        elif isinstance(doc, ServiceEvent):
            self.on_event(doc)
        else:
            self.on_status(doc)
