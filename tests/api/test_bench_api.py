"""bench/bench_api.py still runs: its --smoke sizes, a real server process, in seconds.

The figures are meaningless at these sizes and not asserted; what is asserted is what the
swap run must never show: failed requests, or an answer naming a removed identity.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench.test_bench_smoke import bench_module


def test_bench_api_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench_api.json"
    record = bench_module("bench_api").main(
        ["--smoke", "--threads", "1", "--out", str(out), "--workdir", str(tmp_path / "work")]
    )
    saved = json.loads(out.read_text())
    assert saved["benchmark"] == "bench_api" and isinstance(record, dict)
    assert saved["threads"] == {"torch": 1, "faiss_omp": 1}
    phases = {(r["endpoint"], r["concurrency"]) for r in saved["load"]}
    assert phases == {(e, c) for e in ("/healthz", "/v1/search", "/v1/identify") for c in (1, 4)}
    assert all(r["failed"] == 0 and r["requests"] > 0 for r in saved["load"])
    assert saved["client"] == "threads" and saved["servers"] == ["new"]
    searches = [r for r in saved["load"] if r["endpoint"] == "/v1/search"]
    assert all(r["server_cpu_ms"] > 0 and r["mean_batch"] >= 1 for r in searches)
    assert saved["floors"]["faiss"]["us_per_probe_batch8"] > 0
    assert saved["answer_serialization"]["orjson_response_us"] > 0
    assert saved["paired"]["identify"]["in_process"]["p50"] > 0
    assert saved["paired"]["search"]["ratio_p50"] > 0
    swap = saved["swap"]
    assert swap["failed"] == 0 and swap["removed_identity_answers"] == 0
    assert swap["victim_answers_before_removal"] > 0  # the probes did aim at the victims
    assert len(swap["published"]) == 3
    assert len(swap["versions_seen"]) == 4


def test_ratios_pair_each_phase_new_over_baseline() -> None:
    ratios = bench_module("bench_api").ratios
    rows = [
        {
            "server": "new",
            "endpoint": "/v1/search",
            "concurrency": 8,
            "rps": 900.0,
            "p50": 5.0,
            "server_cpu_ms": 0.5,
        },
        {
            "server": "old",
            "endpoint": "/v1/search",
            "concurrency": 8,
            "rps": 300.0,
            "p50": 20.0,
            "server_cpu_ms": 2.0,
        },
    ]
    assert ratios(rows) == [
        {
            "endpoint": "/v1/search",
            "concurrency": 8,
            "baseline": "old",
            "rps": 3.0,
            "p50": 0.25,
            "server_cpu_ms": 0.25,
        }
    ]
    assert ratios(rows[:1]) == []
