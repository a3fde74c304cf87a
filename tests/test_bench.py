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
        "cpu_bound_ratio",
    } <= set(row)
    assert row["ratings"] == 3000 and row["lost"] == 0 and row["duplicates"] == 0
    assert set(row["cpu_s"]) == {"gateways", "mosquitto", "influxd", "publishers"}
    assert row["cpu_s"]["publishers"] > 0  # the mosquitto_pub children were reaped and counted
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


def test_bench_board_paints_every_committed_press() -> None:
    """`windowrate bench board` on a small hall: every kiosk press painted, cold loads timed."""
    out = subprocess.run(
        [sys.executable, "-m", "windowrate", "--log-level", "WARNING", "bench", "board",
         "--windows", "3", "--rate", "3", "--seconds", "2", "--page-windows", "5",
         "--loads", "2", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    ).stdout.strip().splitlines()  # fmt: skip
    row, summary = json.loads(out[-2]), json.loads(out[-1])
    assert summary["error"] is None and row["error"] is None
    assert row["committed"] == row["received"] == row["stored"] == 6
    assert row["lost"] == 0 and row["refused"] == 0
    assert row["p50_ms"] is not None and row["p99_ms"] is not None
    assert len(row["page_loads_cold_ms"]) == 2 and row["page_load_warm_ms"] is not None
    assert row["page_rows"] == 5 + 3  # the seeded windows and the kiosks' windows
    assert row["gateway_gap_checks"] >= 1 and row["gateway_seq_missing"] == 0
    assert row["thanks_s"] > 0  # the terminal's own thank-you time, not shortened


def test_bench_kiosk_presses_every_level_and_delivers_each_once() -> None:
    """`windowrate bench kiosk`: all five levels, a reasons screen per low one, none lost;
    then 300 presses through the app's handlers for the memory figures and the cold start."""
    from bench.kiosk import production_thanks_s

    out = subprocess.run(
        [sys.executable, "-m", "windowrate", "--log-level", "WARNING", "bench", "kiosk",
         "--presses", "5", "--growth-presses", "300", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    ).stdout.strip().splitlines()  # fmt: skip
    row, summary = json.loads(out[-2]), json.loads(out[-1])
    assert summary["error"] is None and row["ok"] is True
    assert row["presses"] == 5 and row["refused"] == 0
    assert row["levels"] == [5, 4, 3, 2, 1]
    assert row["low_ratings"] == 2 and row["reasons_screens"] == 2
    growth = row["growth"]
    assert growth["presses"] == 300 and growth["committed"] == 300 + growth["warmup"]
    assert row["committed"] == row["delivered"] == 5 + growth["committed"]
    assert row["lost"] == 0 and row["duplicates"] == 0
    assert row["thanks_s"] == production_thanks_s()
    for key in ("rss_over_bare_kivy_mb", "rss_growth_20k_presses_mb", "cold_start_s"):
        assert isinstance(summary[key], float) and summary[key] == row[key], key
    assert row["cold_start_s"] > 0 and row["rss_bare_kivy_window_mb"] > 0


def test_bench_export_times_both_periods_cold_on_realistic_data() -> None:
    """`windowrate bench export` with 20 windows: raw days at both ends, every exclusion kind."""
    out = subprocess.run(
        [sys.executable, "-m", "windowrate", "--log-level", "WARNING", "bench", "export",
         "--windows", "20", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    ).stdout.strip().splitlines()  # fmt: skip
    row, summary = json.loads(out[-2]), json.loads(out[-1])
    assert summary["unaligned_s"] == row["unaligned"]["seconds"]
    un, al = row["unaligned"], row["aligned"]
    assert (un["from"], un["to"]) == ("2025-11-17", "2026-11-16")
    assert un["raw_days"] == 3 and un["rollup_days"] == 362  # first day and last two raw
    assert (al["from"], al["to"]) == ("2025-11-01", "2026-10-31")
    assert al["raw_days"] == 0 and al["rollup_days"] == 365
    for period in (un, al):
        assert period["rows"] == 20 and period["cases"] > 0 and period["counted"] > 0
        assert set(period["exclusions"]) == {"test_device", "repeat", "paused", "fraud", "appeal"}
        assert (
            period["excluded_by_review"]
            == period["exclusions"]["fraud"] + period["exclusions"]["appeal"]
        )
    assert row["rollup_build_days"] == 3 and row["rollup_build_s"] > 0
    assert row["test_devices"] == 1 and row["cases"] > 0


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


def test_bench_gateway_backlog_drains_every_rating_once() -> None:
    """`windowrate bench gateway --backlog`: a queued backlog from many devices drains whole.

    70,000 is more than the 65,535 packet ids: Mosquitto then has ids in flight twice, and
    each copy must get its own PUBACK or it stays queued in the session.
    """
    row = _last_json(
        [
            "windowrate",
            "--log-level",
            "WARNING",
            "bench",
            "gateway",
            "--backlog",
            "70000",
            "--devices",
            "70",
            "--halls",
            "4",
            "--json",
        ],
        timeout=900,
    )
    assert row["backlog"] == 70000 and row["devices"] == 70
    assert row["lost"] == 0 and row["duplicates"] == 0
    assert row["left_in_broker_queue"] == 0 and row["redelivered"] == 0
    assert row["drained_s"] > 0 and "not_measured" in row


def test_bench_peers_compares_with_nodered_in_one_run() -> None:
    """`windowrate bench peers`: Node-RED from npm and our gateway on the same ratings."""
    row = _last_json(
        ["windowrate", "--log-level", "WARNING", "bench", "peers", "--ratings", "2000"],
        timeout=1200,
    )
    assert row["ratings"] == 2000
    ours, theirs = row["ours"], row["nodered"]
    assert ours["lost"] == 0 and ours["doubled"] == 0
    assert {"ratings_per_s", "lost", "doubled"} <= set(theirs)
    assert "setup" in row


def test_every_benchmark_has_a_smoke_test() -> None:
    """Each benchmark in bench/ (not its helpers) is run by some test, by name."""
    tests = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    names = [
        p.stem
        for p in (REPO / "bench").glob("*.py")
        if re.search(r"^def run_bench|^if __name__ == .__main__.:", p.read_text(), re.M)
    ]
    missing = [n for n in names if not re.search(rf'"bench",\s*"{n}"|"bench\.{n}"', tests)]
    assert missing == []
