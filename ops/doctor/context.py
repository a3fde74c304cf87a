"""What every check reads: the installation, the services' settings and what was seen so far."""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from common.installation import Installation
from gateway.settings import GatewaySettings
from ops.doctor.settings import DoctorSettings
from server.broker.pki import PkiPaths
from server.settings import ServerSettings
from storage.client import InfluxClient

# The systemd unit of each part on an installed hall (deploy/hall), and its log in a dev stack.
UNITS = {
    "broker": ("windowrate-broker", "mosquitto/mosquitto.log"),
    "influxdb": ("windowrate-influxd", "influxdb/influxd.out"),
    "gateway": ("windowrate-gateway", "gateway.log"),
    "server": ("windowrate-server", "server.log"),
}


@dataclass
class Context:
    """The installation under check, its settings, and facts the first checks found."""

    installation: Installation | None
    server: ServerSettings
    gateway: GatewaySettings
    doctor: DoctorSettings
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    influx_up: bool = True
    metrics: dict[str, str | None] = field(default_factory=dict)

    @property
    def describe(self) -> str:
        """Which installation, found how (or the process's environment)."""
        if self.installation is None:
            return "this process's environment"
        return self.installation.describe()

    @property
    def run_dir(self) -> Path | None:
        """The run directory of a `windowrate up` dev stack, else None (an installed hall)."""
        return None if self.installation is None else self.installation.run_dir

    def influx(self) -> InfluxClient:
        """A client of the InfluxDB the server reads, with the doctor's timeout."""
        settings = self.server.influx.model_copy(update={"timeout_s": self.doctor.timeout_s * 3})
        return InfluxClient(settings)

    def pki(self) -> PkiPaths | None:
        """The hall's PKI directory (where the CA given to kiosks lives), if configured."""
        ca = self.server.provisioning.ca_file
        return None if ca is None else PkiPaths(ca.parent)

    def restart(self, part: str) -> tuple[str, str]:
        """How to restart a part and see its log, in Chinese and English."""
        unit, log = UNITS[part]
        if self.run_dir is not None:
            where = self.run_dir / log
            return (
                f"重新启动 windowrate up，并查看 {where}",
                f"restart `windowrate up` and read {where}",
            )
        return (
            f"执行 systemctl restart {unit}，并查看 journalctl -u {unit}",
            f"run `systemctl restart {unit}` and read `journalctl -u {unit}`",
        )
