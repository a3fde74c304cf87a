"""`/api/provisioning`: register devices, issue one-time codes, revoke, and let kiosks redeem codes.

Admins act on every hall, hall managers on their own; office and viewers only read the
account list of what they may see. Redeeming is the only call without a login: it is
rate-limited per address and, unless allowed for a closed demo, refused over plain HTTP.
"""

import logging
from datetime import datetime
from typing import Annotated

import segno
from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from protocol.topics import ID_PATTERN
from server.auth.deps import Principal, SessionDep, UserDep
from server.auth.service import RateLimiter
from server.provisioning import service
from server.provisioning.models import BrokerAccount
from server.provisioning.service import ProvisioningError
from server.settings.provisioning import ProvisioningSettings

log = logging.getLogger(__name__)

IdStr = Annotated[str, Field(pattern=f"^{ID_PATTERN}$")]


class DeviceAdd(BaseModel):
    """A device to register for provisioning."""

    model_config = ConfigDict(extra="forbid")

    hall: IdStr = Field(title="Hall id (made when new)")
    device: IdStr = Field(title="Device id")
    window: IdStr | None = Field(default=None, title="Window code (made when new)")
    test_device: bool = Field(default=False, title="Test device: its ratings never count")


class CodeOut(BaseModel):
    """A one-time provisioning code: shown once, typed or scanned at the kiosk."""

    device: str
    hall: str
    code: str = Field(title="One-time code, e.g. 7K3M-Q9XD-2HVA-WB4T")
    expires: datetime
    url: str = Field(title="Server address the kiosk redeems the code at")
    ca_fingerprint: str | None = Field(title="SHA-256 of the hall CA the kiosk must see")
    qr_svg: str = Field(title="QR code (SVG) of url, code and fingerprint")


class AccountOut(BaseModel):
    """A broker login (never its password or hash)."""

    username: str
    role: str
    hall: str | None
    revoked: bool
    updated: datetime


class RedeemIn(BaseModel):
    """What a kiosk sends."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=4, max_length=64, title="The one-time code")


class MqttOut(BaseModel):
    """How the kiosk reaches the broker."""

    host: str
    port: int
    username: str
    password: str
    tls: bool


class RedeemOut(BaseModel):
    """A kiosk's identity and broker login."""

    hall: str
    device: str
    window: str | None
    mqtt: MqttOut
    ca_pem: str | None = Field(title="The hall CA to trust for the broker (PEM)")


class CaOut(BaseModel):
    """The hall CA (public)."""

    pem: str | None
    fingerprint: str | None


def _manage(who: Principal, hall: str) -> None:
    """403 unless `who` may register or revoke devices of `hall`."""
    if who.role == "admin" or (who.role == "hall_manager" and who.hall == hall):
        return
    raise HTTPException(status_code=403, detail=f"role {who.role} may not provision in {hall}")


def _manage_account(who: Principal, acc: BrokerAccount) -> None:
    """403 unless `who` may act on `acc`: admins on all, hall managers on their devices only."""
    if who.role != "admin" and acc.role != "device":
        raise HTTPException(status_code=403, detail=f"role {who.role} may not manage {acc.role}s")
    _manage(who, service.account_hall(acc) or "")


def _error(exc: ProvisioningError) -> HTTPException:
    """The HTTP form of a provisioning error."""
    return HTTPException(status_code=exc.status, detail=str(exc))


def make_router(cfg: ProvisioningSettings) -> APIRouter:
    """Return the provisioning router."""
    router = APIRouter(prefix="/api/provisioning", tags=["provisioning"])
    limiter = RateLimiter(max_failures=10, window_s=15 * 60)

    def ca_pem() -> bytes | None:
        return cfg.ca_file.read_bytes() if cfg.ca_file is not None else None

    def code_out(request: Request, acc: BrokerAccount, code: str, expires: datetime) -> CodeOut:
        pem = ca_pem()
        fp = service.ca_fingerprint(pem) if pem else None
        url = str(request.base_url).rstrip("/")
        payload = f"WR1;{url};{code};{fp or ''}"
        qr = segno.make(payload, error="m").svg_inline(scale=4)
        hall = service.account_hall(acc) or ""
        return CodeOut(
            device=acc.username,
            hall=hall,
            code=code,
            expires=expires,
            url=url,
            ca_fingerprint=fp,
            qr_svg=qr,
        )

    def sync(session: SessionDep) -> None:
        service.sync_broker(session, cfg)

    @router.post("/devices", response_model=CodeOut, status_code=201)
    def add_device(request: Request, body: DeviceAdd, who: UserDep, session: SessionDep) -> CodeOut:
        """Register a device (hall and window made when new) and issue its first code."""
        _manage(who, body.hall)
        try:
            acc, _password, _created = service.add_device(
                session,
                hall=body.hall,
                device=body.device,
                window=body.window,
                test_device=body.test_device,
                actor=who.username,
            )
            code, expires = service.issue_code(session, acc.username, cfg.code_hours, who.username)
        except ProvisioningError as exc:
            session.rollback()
            raise _error(exc) from exc
        session.commit()
        sync(session)
        return code_out(request, acc, code, expires)

    @router.post("/devices/{device}/code", response_model=CodeOut, status_code=201)
    def new_code(request: Request, device: str, who: UserDep, session: SessionDep) -> CodeOut:
        """Issue another one-time code for a device (e.g. a replaced SD card)."""
        try:
            acc = service.find_account(session, device)
            _manage_account(who, acc)
            code, expires = service.issue_code(session, device, cfg.code_hours, who.username)
        except ProvisioningError as exc:
            session.rollback()
            raise _error(exc) from exc
        session.commit()
        return code_out(request, acc, code, expires)

    @router.post("/devices/{device}/revoke", response_model=AccountOut)
    def revoke(device: str, who: UserDep, session: SessionDep) -> AccountOut:
        """Refuse the device at the broker from its next reload (done at once when managed)."""
        try:
            acc = service.find_account(session, device)
            _manage_account(who, acc)
            service.revoke(session, device, who.username)
        except ProvisioningError as exc:
            session.rollback()
            raise _error(exc) from exc
        session.commit()
        sync(session)
        return AccountOut.model_validate(acc, from_attributes=True)

    @router.get("/accounts", response_model=list[AccountOut])
    def accounts(who: UserDep, session: SessionDep) -> list[AccountOut]:
        """Broker logins: all for admin and office, the own hall's devices for others."""
        rows = session.scalars(select(BrokerAccount).order_by(BrokerAccount.username))
        out = []
        for acc in rows:
            hall = service.account_hall(acc)
            if who.role in ("admin", "office") or (acc.role == "device" and hall == who.hall):
                out.append(
                    AccountOut.model_validate(acc, from_attributes=True).model_copy(
                        update={"hall": hall}
                    )
                )
        return out

    @router.get("/ca", response_model=CaOut)
    def ca() -> CaOut:
        """The hall CA a kiosk checks against the fingerprint it was given (public)."""
        pem = ca_pem()
        if pem is None:
            return CaOut(pem=None, fingerprint=None)
        return CaOut(pem=pem.decode(), fingerprint=service.ca_fingerprint(pem))

    @router.post(
        "/redeem",
        response_model=RedeemOut,
        responses={404: {"description": "Unknown code"}, 410: {"description": "Used/expired"}},
    )
    async def redeem(
        request: Request, body: Annotated[RedeemIn, Body()], session: SessionDep
    ) -> RedeemOut:
        """Spend a one-time code: the kiosk's identity, broker login and CA."""
        if request.url.scheme != "https" and not cfg.allow_plain_http:
            raise HTTPException(status_code=403, detail="redeem codes over HTTPS only")
        ip = request.client.host if request.client else "unknown"
        wait = limiter.retry_after(f"ip:{ip}")
        if wait:
            raise HTTPException(
                status_code=429,
                detail=f"too many wrong codes; try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )

        def work() -> RedeemOut:
            try:
                acc, password = service.redeem(session, body.code)
            except ProvisioningError as exc:
                session.rollback()
                limiter.fail(f"ip:{ip}")
                raise _error(exc) from exc
            dev = acc.device
            out = RedeemOut(
                hall=service.account_hall(acc) or "",
                device=acc.username,
                window=None if dev is None or dev.window is None else dev.window.code,
                mqtt=MqttOut(
                    host=cfg.broker_host,
                    port=cfg.broker_port,
                    username=acc.username,
                    password=password,
                    tls=cfg.ca_file is not None,
                ),
                ca_pem=(ca_pem() or b"").decode() or None,
            )
            session.commit()
            service.sync_broker(session, cfg)
            log.info("device %s redeemed a provisioning code from %s", acc.username, ip)
            return out

        return await run_in_threadpool(work)

    return router
