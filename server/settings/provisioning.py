"""Broker accounts and provisioning settings (WR_SERVER_PROVISIONING__*)."""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ProvisioningSettings(BaseModel):
    """Where the broker's files are, what kiosks are told about the broker, code lifetime."""

    model_config = ConfigDict(extra="forbid")

    broker_auth_dir: Path | None = Field(
        default=None, title="Directory of the broker's passwd and acl (none: not managed here)"
    )
    broker_pid_file: Path | None = Field(
        default=None, title="Mosquitto's pid file: SIGHUP after each change (reload)"
    )
    broker_host: str = Field(default="127.0.0.1", title="Broker host kiosks are told to use")
    broker_port: int = Field(default=8883, ge=1, le=65535, title="Broker port kiosks use")
    ca_file: Path | None = Field(
        default=None, title="The hall CA (windowrate pki); kiosks get it and use TLS when set"
    )
    code_hours: int = Field(default=24, ge=1, le=24 * 30, title="Provisioning code lifetime")
    prefix: str = Field(default="wr", title="Topic prefix of the ACLs")
    allow_plain_http: bool = Field(
        default=False, title="Let kiosks redeem codes over plain HTTP (closed demo networks only)"
    )
