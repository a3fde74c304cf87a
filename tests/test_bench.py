"""The benchmarks run and report what they promise (figures are not asserted, only shape)."""

import json
import re
import subprocess
import sys
from typing import Any

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


def test_bench_lineproto_compares_both_builders() -> None:
    """`windowrate bench lineproto` on a small run: both builders timed, same point times."""
    out = subprocess.run(
        [sys.executable, "-m", "windowrate", "bench", "lineproto", "--points", "2000", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
    row = json.loads(out.splitlines()[-1])
    assert row["points"] == 2000
    assert row["hand_written_us_per_point"] > 0
    assert row["influxdb_client_point_us_per_point"] > 0
    assert row["same_point_time"] is True


def _last_json(args: list[str], timeout: float) -> dict[str, Any]:
    """Run `python -m …args` in the repository; return the JSON object on its last line."""
    out = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout.strip()
    row: dict[str, Any] = json.loads(out.splitlines()[-1])
    return row


def test_bench_board_reports_latency_and_page_load() -> None:
    """`windowrate bench board` on a small hall: press-to-board and page-load figures."""
    row = _last_json(
        ["windowrate", "--log-level", "WARNING", "bench", "board", "--windows", "10",
         "--rate", "20", "--seconds", "2", "--page-windows", "10", "--json"],
        timeout=300,
    )  # fmt: skip
    assert {"p50_ms", "p99_ms", "page_load_ms"} <= set(row)
    assert row["p50_ms"] > 0 and row["page_load_ms"] > 0


def test_bench_kiosk_commits_and_delivers_every_press() -> None:
    """`windowrate bench kiosk` with a few presses: the summary row, every press delivered."""
    row = _last_json(
        ["windowrate", "--log-level", "WARNING", "bench", "kiosk", "--presses", "20"], timeout=600
    )
    assert row["presses"] == 20
    assert row["p50_ms"] is not None and row["p99_ms"] is not None


def test_bench_fuzz_serial_finds_no_crash_and_no_false_press() -> None:
    """`python -m bench.fuzz_serial` on a few hundred inputs: the summary row."""
    row = _last_json(["bench.fuzz_serial", "--inputs", "300"], timeout=300)
    assert row["inputs"] == 300
    assert row["crashes"] == 0 and row["false_presses"] == 0


def test_bench_drain_loses_and_doubles_nothing() -> None:
    """`python -m bench.drain` on a small backlog: every consumer gets each message once."""
    row = _last_json(["bench.drain", "--messages", "2000", "--publishers", "2"], timeout=600)
    assert row["messages"] == 2000
    assert set(row["lost"].values()) == {0} and set(row["duplicates"].values()) == {0}


def test_every_benchmark_has_a_smoke_test() -> None:
    """Each module in bench/ is run by some test (as `bench <name>` or `bench.<name>`)."""
    tests = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    names = [p.stem for p in (REPO / "bench").glob("*.py") if p.stem != "__init__"]
    missing = [n for n in names if not re.search(rf'"bench",\s*"{n}"|"bench\.{n}"', tests)]
    assert missing == []
