"""Days until the hall CA and the broker's certificate expire."""

from pathlib import Path

from cryptography import x509

from ops.doctor.context import Context
from ops.doctor.report import Check, Status, ok, problem

PART = "certs"


def _check(ctx: Context, name: str, path: Path, renew_zh: str, renew_en: str) -> Check:
    """Read one certificate file and judge its days left."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return problem(
            PART,
            name,
            "fail",
            f"{path}: {exc}",
            f"证书无法读取：{renew_zh}",
            f"the certificate cannot be read: {renew_en}",
        )
    expires = cert.not_valid_after_utc
    days = (expires - ctx.now).total_seconds() / 86400
    value = f"{path}: expires {expires:%Y-%m-%d} ({days:.0f} days)"
    data = {"path": str(path), "expires": expires.isoformat(), "days_left": round(days, 1)}
    d = ctx.doctor
    if days < d.cert_fail_days:
        status: Status = "fail"
    elif days < d.cert_warn_days:
        status = "warn"
    else:
        return ok(PART, name, value, **data)
    gone = "已过期" if days < 0 else f"{days:.0f} 天后过期"
    gone_en = "has expired" if days < 0 else f"expires in {days:.0f} days"
    return problem(
        PART, name, status, value, f"{gone}：{renew_zh}", f"{gone_en}: {renew_en}", **data
    )


def run(ctx: Context) -> list[Check]:
    """The CA and broker certificates of the PKI directory the server names."""
    pki = ctx.pki()
    if pki is None:
        return [
            problem(
                PART,
                "ca",
                "warn",
                "no CA configured (WR_SERVER_PROVISIONING__CA_FILE)",
                "用 windowrate pki init 建立大厅 CA",
                "make the hall CA with `windowrate pki init`",
            )
        ]
    d = pki.root
    broker = ctx.restart("broker")
    return [
        _check(
            ctx,
            "ca",
            pki.ca_cert,
            f"把 {d}/ca.crt 与 ca.key 移走，执行 windowrate pki init --dir {d} --host <代理地址>，"
            "并重新配置每台评价器",
            f"move {d}/ca.crt and ca.key aside, run `windowrate pki init --dir {d} --host "
            "<broker host>` and re-provision every kiosk",
        ),
        _check(
            ctx,
            "broker",
            pki.cert("broker"),
            f"重新签发（windowrate pki init --dir {d} --host <代理地址>），然后{broker[0]}",
            f"re-issue it (`windowrate pki init --dir {d} --host <broker host>`), then {broker[1]}",
        ),
    ]
