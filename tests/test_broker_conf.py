"""`windowrate broker conf` makes a configuration a real Mosquitto runs with: TLS outside,
plain MQTT only on loopback, anonymous off, the registry's logins."""

import os
import subprocess
import sys
import time
from pathlib import Path

from devstack.services import die_with_parent, free_port, port_open
from server.broker import accounts as broker_auth
from server.broker.accounts import Account
from server.broker.pki import PkiPaths, init_ca, issue_server_cert
from tests.support import CHILDREN, REPO, wait_until
from tests.test_broker_security import Client


def test_generated_conf_runs_secured(tmp_path: Path) -> None:
    """The generated file starts Mosquitto; logins and TLS behave as configured."""
    pki = PkiPaths(tmp_path / "pki")
    init_ca(pki)
    issue_server_cert(pki, "broker", ["localhost", "127.0.0.1"])
    auth = tmp_path / "auth"
    broker_auth.write_files(
        auth, [Account("k-1", broker_auth.mosquitto_hash("pw1"), "device", "h", "k-1")]
    )
    plain, tls = free_port(), free_port()
    conf = tmp_path / "mosquitto.conf"
    env = {**os.environ, "WR_UPLINK_PASSWORD": "uplink-secret"}
    out = subprocess.run(
        [
            sys.executable, "-m", "windowrate", "broker", "conf",
            "--pki-dir", str(pki.root), "--auth-dir", str(auth), "--data-dir", str(tmp_path),
            "--plain-port", str(plain), "--tls-port", str(tls), "--out", str(conf),
            "--uplink-hall", "h", "--central-host", "127.0.0.1", "--central-port", str(free_port()),
            "--uplink-user", "uplink-h", "--user", "root",
        ],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = conf.read_text()
    assert conf.stat().st_mode & 0o777 == 0o600 and "remote_password uplink-secret" in text
    assert "uplink-secret" not in out.stderr + out.stdout
    assert f"listener {plain} 127.0.0.1" in text and "allow_anonymous false" in text
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    CHILDREN.append(proc)
    try:
        wait_until(lambda: port_open("127.0.0.1", plain) and port_open("127.0.0.1", tls), 10)
        assert Client(plain, "k-1", "pw1").accepted
        assert not Client(plain, None, None).accepted
        assert not Client(tls, "k-1", "pw1").accepted  # plain MQTT on the TLS port
        assert Client(tls, "k-1", "pw1", ca=pki.ca_cert).accepted
    finally:
        proc.terminate()
        proc.wait(10)
        time.sleep(0)
