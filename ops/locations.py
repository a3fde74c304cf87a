"""Where each part of a hall lives, read from the services' settings (the installation's env)."""

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.settings import GatewaySettings
from server.scores.settings import ScoresSettings
from server.settings import ServerSettings
from storage.client import InfluxSettings

STATE_FILE = "backup-state.json"


@dataclass(frozen=True)
class Locations:
    """The hall's parts: registry URL, directories, InfluxDB (paths absolute)."""

    config_dir: Path | None
    registry_url: str
    gateway_dir: Path
    pki_dir: Path | None
    broker_auth_dir: Path | None
    export_dir: Path
    influx: InfluxSettings

    def directories(self) -> dict[str, Path | None]:
        """The plain directory parts by name."""
        return {
            "pki": self.pki_dir,
            "broker-auth": self.broker_auth_dir,
            "exports": self.export_dir,
        }


def from_environment(config_dir: Path | None) -> Locations:
    """Read the server's, scores' and gateway's settings from the environment now."""
    server = ServerSettings()
    scores = ScoresSettings()
    gateway = GatewaySettings()
    ca = server.provisioning.ca_file
    auth = server.provisioning.broker_auth_dir
    return Locations(
        config_dir=config_dir.resolve() if config_dir else None,
        registry_url=server.database_url,
        gateway_dir=gateway.data_dir.resolve(),
        pki_dir=ca.resolve().parent if ca else None,
        broker_auth_dir=auth.resolve() if auth else None,
        export_dir=scores.export_dir.resolve(),
        influx=server.influx,
    )


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Within the block, the process environment has `values` set (restored after)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
