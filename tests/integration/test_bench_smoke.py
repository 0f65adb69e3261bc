"""Smoke test of `make bench`: `python -m bench --quick` runs every shape end to end (real orchestrator and
worker processes, and the DBOS side) and writes JSON with every metric. No timing assertions: the
numbers only have to be there and be sane."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

OURS_RATES = ("throughput.steps_per_s", "ingest_no_trigger.events_per_s", "ingest_triggered.events_per_s")
LATENCIES = ("latency", "grpc_floor", "grpc_floor_back_to_back", "resume", "scale_latency", "scale_resume",
             "scale_base_latency", "scale_base_resume")
DBOS_RATES = ("throughput.steps_per_s", "ingest_triggered.events_per_s")
DBOS_LATENCIES = ("latency", "latency_default_polling", "resume", "scale_latency", "scale_resume")


def _at(result: dict, dotted: str) -> object:
    for part in dotted.split("."):
        assert isinstance(result, dict) and part in result, f"missing {dotted}"
        result = result[part]
    return result


def _check_latency(side: dict, name: str) -> None:
    summary = _at(side, name)
    assert isinstance(summary, dict), f"{name}: {summary!r} ({side.get('errors')})"
    assert summary["n"] > 0
    assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"] < 60_000, summary


@pytest.mark.timeout(120)
def test_bench_quick_writes_every_metric(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| metric" in proc.stdout and "throughput" in proc.stdout

    results = json.loads(out.read_text())
    # Each store's table: the scale shape's ratio to its alternated baseline, first step and resume.
    ratios = proc.stdout.count("ratio, with them / none waiting")
    assert ratios == 2 * len(results["config"]["stores"]), proc.stdout
    # dbos is in the dev extra, so the DBOS side runs here; outside the suite the bench runs without it.
    dbos_installed = importlib.util.find_spec("dbos") is not None
    assert dbos_installed, "dbos is missing: pip install -e '.[dev]'"
    assert results["config"]["dbos"] is True
    sqlite = results["stores"]["sqlite"]

    ours = sqlite["ours"]
    for name in OURS_RATES:
        assert float(_at(ours, name)) > 0, name  # type: ignore[arg-type]
    for name in LATENCIES:
        _check_latency(ours, name)
    calibration = ours["grpc_calls_per_s"]
    assert calibration["calls"] == 20 * results["config"]["samples"] and calibration["in_flight"] == 16
    assert calibration["calls_per_s"] == pytest.approx(calibration["calls"] / calibration["seconds"])
    assert ours["scale_waiting"] == results["config"]["waiting"] > 0
    assert ours["scale_park_seconds"] > 0
    for name in ("rss_idle_bytes", "scale_rss_bytes", "scale_rss_after_bytes"):
        assert 10 * 2**20 < ours[name] < 4 * 2**30, (name, ours[name])

    dbos = sqlite["dbos"]
    assert not dbos.get("errors"), dbos["errors"]
    for name in DBOS_RATES:
        assert float(_at(dbos, name)) > 0, name  # type: ignore[arg-type]
    for name in DBOS_LATENCIES:
        _check_latency(dbos, name)
    assert dbos["ingest_no_trigger"] is None  # DBOS has no events to ingest
    assert dbos["scale_waiting"] > 0 and dbos["rss_idle_bytes"] > 0
