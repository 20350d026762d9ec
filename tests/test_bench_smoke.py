"""Smoke test for ``python -m benchmarks --quick``: every figure is measured and typed; no thresholds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the whole bench once; scripts/test --all and CI run it

from benchmarks.report import verdict

REPO = Path(__file__).resolve().parents[1]

NUMBERS = (int, float)
EXPECTED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "payment": {"payments": int, "agent_p50_ms": NUMBERS, "agent_p95_ms": NUMBERS, "naive_p50_ms": NUMBERS,
                "naive_p95_ms": NUMBERS, "speedup_p50": NUMBERS, "warm_p50_ms": NUMBERS, "warm_p95_ms": NUMBERS,
                "speedup_vs_warm_p50": NUMBERS, "agent_payments_on_chain": int,
                "wallet_build_sign_p50_ms": NUMBERS, "wallet_sender_fake_chain_p50_ms": NUMBERS,
                "wallet_sender_ogmios_p50_ms": NUMBERS, "v2_agent_p50_ms": NUMBERS, "v2_agent_p95_ms": NUMBERS,
                "v2_payments_settled": int, "ledger_writes_full_p50_ms": NUMBERS,
                "ledger_writes_normal_p50_ms": NUMBERS},
    "throughput": {"jobs_1_worker": int, "jobs_8_workers": int, "calls_per_s_1": NUMBERS,
                   "calls_per_s_8": NUMBERS, "speedup": NUMBERS, "failed": int, "retried": int,
                   "double_spent": int, "missing_on_chain": int, "ledger_mismatch_lovelace": int,
                   "twin_health_rtt_ms": NUMBERS},
    "fee": {"agent_ratio": dict, "agent_excess_lovelace": dict, "naive_ratio": dict, "max_ratio": NUMBERS},
    "memory": {"jobs": int, "jobs_done": int, "workers": int, "run_seconds": NUMBERS, "peak_rss_mb": NUMBERS,
               "status_peak_rss_mb": NUMBERS, "paying_jobs": int, "paying_peak_rss_mb": NUMBERS},
    "startup": {"runs": int, "help_s": NUMBERS, "status_s": NUMBERS, "status_offline_s": NUMBERS},
    "capacity": {"transactions": int, "blocks": int, "seconds_submitting": NUMBERS, "tx_per_s": NUMBERS},
    "fleet": {"jobs_per_host": int, "calls_per_s_sqlite_1x8": NUMBERS, "calls_per_s_pg_1x8": NUMBERS,
              "calls_per_s_pg_2x8": NUMBERS, "pg_vs_sqlite": NUMBERS, "two_hosts_vs_one": NUMBERS,
              "failed": int, "double_spent": int, "missing_on_chain": int, "ledger_mismatch_lovelace": int},
    "backends": {"payments": int, "ogmios_p50_ms": NUMBERS, "blockfrost_p50_ms": NUMBERS,
                 "blockfrost_requests_per_payment": NUMBERS, "ogmios_calls_per_s_8": NUMBERS,
                 "blockfrost_calls_per_s_8": NUMBERS, "blockfrost_requests_per_call_8": NUMBERS,
                 "failed": int, "double_spent": int, "missing_on_chain": int},
    "blocks": {"jobs": int, "block_time_s": NUMBERS, "wall_blocks": NUMBERS, "tx_bytes": int, "capacity_blocks": int,
               "vs_capacity": NUMBERS, "parked": int, "cpu_ms_per_call": NUMBERS, "calls_per_s_block_time_0": NUMBERS,
               "cpu_bound_calls_per_s": NUMBERS, "failed": int, "double_spent": int, "missing_on_chain": int,
               "ledger_mismatch_lovelace": int},
}


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=1500)  # nine figures; a crash soak may share the machine
    assert out.exists(), proc.stderr[-2000:]
    return proc, json.loads(out.read_text(encoding="utf-8"))


def test_quick_bench_measures_every_figure_with_sane_types(quick_result: tuple) -> None:
    """`--quick` exits 0 and its JSON has every figure, each field of the expected type and not negative."""
    proc, result = quick_result
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert set(result["figures"]) == set(EXPECTED)
    for figure, fields in EXPECTED.items():
        values = result["figures"][figure]
        assert "error" not in values, (figure, values.get("error"))
        for name, kind in fields.items():
            assert isinstance(values[name], kind) and not isinstance(values[name], bool), (figure, name)
            if isinstance(values[name], (int, float)):
                assert values[name] >= 0, (figure, name)
    for ratios in ("agent_ratio", "naive_ratio"):
        assert set(result["figures"]["fee"][ratios]) == {"1_out", "3_out", "10_out"}
        assert all(isinstance(v, float) and v > 0 for v in result["figures"]["fee"][ratios].values())


def test_quick_bench_prints_the_same_figures_and_a_verdict_per_target(quick_result: tuple) -> None:
    """The printed table names every figure and gives each target a verdict matching the JSON."""
    proc, result = quick_result
    for row in result["checks"]:
        lines = [ln.strip() for ln in proc.stdout.splitlines() if f" {row['figure']}.{row['field']} = " in ln]
        assert len(lines) == 1 and lines[0].startswith(verdict(row)), (row, lines)
        assert row["met"] is not None or row.get("invalid"), row
    assert {"nproc", "cpu", "python"} <= set(result["machine"])
    assert result["quick"] is True


def test_targets_say_missed_and_invalid_plainly() -> None:
    """A value past its target is MISSED; a ratio set by a slow twin is INVALID, never met."""
    from benchmarks.report import checks, render_table

    figures = {"payment": {"agent_p50_ms": 12.5, "speedup_p50": 6.0},
               "throughput": {"speedup": 6.0, "failed": 0, "double_spent": 0, "ledger_mismatch_lovelace": 0,
                              "twin_health_rtt_ms": 44.0}}
    rows = {f"{r['figure']}.{r['field']}": r for r in checks(figures)}
    assert verdict(rows["payment.agent_p50_ms"]) == "MISSED"
    assert verdict(rows["payment.speedup_p50"]) == "met"
    assert verdict(rows["throughput.speedup"]) == "INVALID" and rows["throughput.speedup"]["met"] is None
    assert "fee.max_ratio" not in rows  # a figure not run has no verdict
    table = render_table({"figures": figures, "checks": list(rows.values())})
    assert "MISSED       payment.agent_p50_ms = 12.5" in table
    assert "INVALID      throughput.speedup = 6" in table
