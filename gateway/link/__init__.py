"""The gateway's MQTT receive path over the `mqtt5` codec: batches in, batched PUBACKs out."""

from gateway.link.connection import ConnectOptions, LinkError
from gateway.link.frames import Message
from gateway.link.session import Backoff, Batch, Link, LinkCounters

__all__ = ["Backoff", "Batch", "ConnectOptions", "Link", "LinkCounters", "LinkError", "Message"]
