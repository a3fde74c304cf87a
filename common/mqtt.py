"""How every part reaches the broker: MQTT 5 connection settings and client factory."""

import functools
import logging
import ssl
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from protocol.topics import DEFAULT_PREFIX

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def guarded(fn: Callable[P, R]) -> Callable[P, R | None]:
    """Wrap a paho callback: an exception is logged, never allowed to kill paho's thread."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return fn(*args, **kwargs)
        except Exception:
            log.exception("MQTT callback %s failed", fn.__qualname__)
            return None

    return wrapper


class MqttSettings(BaseModel):
    """Broker connection; the password comes from the environment, never from a file in git."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", title="Broker host")
    port: int = Field(default=1883, ge=1, le=65535, title="Broker port")
    username: str | None = Field(default=None, title="MQTT user name")
    password: SecretStr | None = Field(default=None, title="MQTT password (from env)")
    tls_ca: str | None = Field(default=None, title="CA file; enables TLS when set")
    keepalive_s: int = Field(default=30, ge=5, le=600, title="Keepalive seconds")
    prefix: str = Field(default=DEFAULT_PREFIX, title="Topic prefix")


def make_client(
    settings: MqttSettings,
    client_id: str,
    *,
    manual_ack: bool = False,
    paho_logging: bool = True,
) -> mqtt.Client:
    """Return a paho MQTT 5 client configured from `settings` (not yet connected)."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.username:
        pw = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, pw)
    if settings.tls_ca:
        client.tls_set(ca_certs=settings.tls_ca, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    client.suppress_exceptions = True  # and every callback of ours is @guarded too
    if paho_logging:  # off in the gateway's hot path: two log calls per message
        client.enable_logger(logging.getLogger(f"paho.{client_id}"))
    return client
