"""Tables of broker logins and provisioning codes (migration 0005)."""

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.db.models import CODE_LEN, Base, Device, UtcDateTime, utcnow


class BrokerAccount(Base):
    """One MQTT login: a device (its own topics only) or a service (gateway, server, uplink)."""

    __tablename__ = "broker_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(CODE_LEN), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    hall: Mapped[str | None] = mapped_column(String(CODE_LEN), nullable=True)
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), nullable=True, unique=True
    )
    password_hash: Mapped[str] = mapped_column(String(255))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    device: Mapped[Device | None] = relationship(lazy="joined")


class ProvisioningCode(Base):
    """A one-time code a kiosk redeems for its broker login (only its hash is kept)."""

    __tablename__ = "provisioning_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("broker_accounts.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires: Mapped[datetime] = mapped_column(UtcDateTime)
    used: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(CODE_LEN), nullable=True)

    account: Mapped[BrokerAccount] = relationship(lazy="joined")
