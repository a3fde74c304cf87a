"""Registry models: halls, units (部门), windows, devices, staff, service items; users and audit."""

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

CODE_LEN = 64
NAME_LEN = 200
USCC_LEN = 18  # 统一社会信用代码, GB 32100-2015
AREA_LEN = 12  # 行政区划代码: 6 digits (GB/T 2260), 9 or 12 with township and village

# Deterministic constraint names, so that migrations and models agree on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored with its zone and always read back as aware UTC (also from SQLite)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive times and store UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the time as aware UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Base of the registry models."""

    metadata = MetaData(naming_convention=NAMING)


class Hall(Base):
    """A government service hall (政务服务大厅); `code` is the topic's `{hall}`.

    `area_code` is where the hall serves: the 行政区划 of its ratings when their unit
    has none of its own, or their window has no unit.
    """

    __tablename__ = "halls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(CODE_LEN), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    area_code: Mapped[str | None] = mapped_column(String(AREA_LEN))


class Unit(Base):
    """A department (部门) present in a hall; `code` is unique within the hall.

    `uscc` (统一社会信用代码) is not unique: one department may serve in several halls,
    or as several units of one hall.
    """

    __tablename__ = "units"
    __table_args__ = (UniqueConstraint("hall_id", "code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hall_id: Mapped[int] = mapped_column(ForeignKey("halls.id", ondelete="RESTRICT"), index=True)
    code: Mapped[str] = mapped_column(String(CODE_LEN))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    uscc: Mapped[str | None] = mapped_column(String(USCC_LEN))
    area_code: Mapped[str | None] = mapped_column(String(AREA_LEN))

    hall: Mapped[Hall] = relationship(lazy="joined")

    @property
    def effective_area_code(self) -> str | None:
        """Return the unit's 行政区划 code, else its hall's."""
        return self.area_code or self.hall.area_code


class Window(Base):
    """A service window of a hall, optionally run by one unit; `code` is unique in the hall."""

    __tablename__ = "windows"
    __table_args__ = (UniqueConstraint("hall_id", "code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hall_id: Mapped[int] = mapped_column(ForeignKey("halls.id", ondelete="RESTRICT"), index=True)
    unit_id: Mapped[int | None] = mapped_column(
        ForeignKey("units.id", ondelete="RESTRICT"), index=True
    )
    code: Mapped[str] = mapped_column(String(CODE_LEN))
    name: Mapped[str] = mapped_column(String(NAME_LEN))

    hall: Mapped[Hall] = relationship(lazy="joined")
    unit: Mapped[Unit | None] = relationship(lazy="joined")


class Device(Base):
    """An evaluator (评价器) in a hall; `code` is the topic's `{device}`, unique everywhere."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(CODE_LEN), unique=True)
    hall_id: Mapped[int] = mapped_column(ForeignKey("halls.id", ondelete="RESTRICT"), index=True)
    window_id: Mapped[int | None] = mapped_column(
        ForeignKey("windows.id", ondelete="RESTRICT"), index=True
    )
    test_device: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    hall: Mapped[Hall] = relationship(lazy="joined")
    window: Mapped[Window | None] = relationship(lazy="joined")


class Staff(Base):
    """A window clerk of a hall; `number` (工号) is unique within the hall."""

    __tablename__ = "staff"
    __table_args__ = (UniqueConstraint("hall_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hall_id: Mapped[int] = mapped_column(ForeignKey("halls.id", ondelete="RESTRICT"), index=True)
    unit_id: Mapped[int | None] = mapped_column(
        ForeignKey("units.id", ondelete="RESTRICT"), index=True
    )
    number: Mapped[str] = mapped_column(String(CODE_LEN))
    name: Mapped[str] = mapped_column(String(NAME_LEN))

    hall: Mapped[Hall] = relationship(lazy="joined")
    unit: Mapped[Unit | None] = relationship(lazy="joined")


class ServiceItem(Base):
    """A service item (事项) of the catalogue; `code` is unique everywhere.

    `catalog_code` is its 事项编码 for the provincial platform; several local items may
    share one (a national item done at several windows or in several ways).
    """

    __tablename__ = "service_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(CODE_LEN), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    catalog_code: Mapped[str | None] = mapped_column(String(CODE_LEN))


ROLES = ("admin", "office", "hall_manager", "viewer")


class User(Base):
    """A person who logs in; a hall manager (`hall_manager`) has a hall, the others none."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'office', 'hall_manager', 'viewer')", name="role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(CODE_LEN), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    hall_id: Mapped[int | None] = mapped_column(
        ForeignKey("halls.id", ondelete="RESTRICT"), index=True
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    hall: Mapped[Hall | None] = relationship(lazy="joined")


class AuthSession(Base):
    """A login: the SHA-256 of the session cookie's token, its CSRF token and its expiry."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires: Mapped[datetime] = mapped_column(UtcDateTime)

    user: Mapped[User] = relationship(lazy="joined")


class LoginFailure(Base):
    """One failed login of a throttle key (`user:NAME` or `ip:ADDR`), kept for the window."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(NAME_LEN), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AuditLog(Base):
    """One audited action: who (username or None), when, what, on which target, details."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    actor: Mapped[str | None] = mapped_column(String(CODE_LEN))
    action: Mapped[str] = mapped_column(String(CODE_LEN))
    target: Mapped[str] = mapped_column(String(NAME_LEN))
    detail: Mapped[str] = mapped_column(Text, default="")
