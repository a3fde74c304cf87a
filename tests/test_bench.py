"""The benchmarks run and report what they promise (figures are not asserted, only shape)."""

import json
import subprocess
import sys

from tests.support import REPO


def test_bench_gateway_reports_no_loss_and_no_duplicates() -> None:
    """`windowrate bench gateway --json` on a small run: the last line is the result row."""
    out = (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "windowrate",
                "--log-level",
                "WARNING",
                "bench",
                "gateway",
                "--ratings",
                "3000",
                "--connections",
                "4",
                "--json",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        .stdout.strip()
        .splitlines()
    )
    row = json.loads(out[-1])
    assert {
        "ratings",
        "seconds",
        "ratings_per_s",
        "broker_qos1_per_s",
        "ratio",
        "lost",
        "duplicates",
    } <= set(row)
    assert row["ratings"] == 3000 and row["lost"] == 0 and row["duplicates"] == 0
    assert abs(row["ratio"] - row["ratings_per_s"] / row["broker_qos1_per_s"]) < 0.002
