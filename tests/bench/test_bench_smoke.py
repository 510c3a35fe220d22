"""Every benchmark still runs: each script's ``main`` at its ``--smoke`` sizes (seconds each).

These check that the benchmarks work against the current code and write a readable result;
the figures themselves are meaningless at these sizes and are not asserted.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.support import ATT_FACES, CELEBA, need_dir, postgres_admin_url

ROOT = Path(__file__).resolve().parents[2]


def bench_module(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (bench/ is a plain folder of scripts, not a package)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"bench.{name}")


def run_smoke(name: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    record = bench_module(name).main(["--smoke", "--threads", "1", "--out", str(out), *extra])
    saved = json.loads(out.read_text())
    assert saved["benchmark"] == name
    assert saved["threads"] == {"torch": 1, "faiss_omp": 1}
    assert saved["hardware"]["cpu_model"]
    assert isinstance(record, dict)
    return saved


def test_bench_index(tmp_path: Path) -> None:
    saved = run_smoke("bench_index", tmp_path, "--kinds", "flat,auto,hnsw,ivfpq-rflat")
    (size,) = saved["sizes"]
    assert size["baseline"]["p50_ms"] > 0
    kinds = {row["kind"]: row for row in size["indexes"]}
    assert set(kinds) == {"flat", "auto", "hnsw", "ivfpq-rflat"}
    assert kinds["flat"]["recall"] == 1.0
    assert all(row["qps_b1"] > 0 and row["qps_b1000"] > 0 for row in kinds.values())
    assert kinds["hnsw"]["vectors"] < size["n"]  # --smoke caps HNSW to a sub-sample


def test_bench_identify_sqlite(tmp_path: Path) -> None:
    saved = run_smoke("bench_identify", tmp_path, "--backends", "sqlite")
    result = saved["backends"]["sqlite"]
    assert result["p50"] > 0 and result["samples"] >= 50
    assert saved["index"]["recall_at_1"] == 1.0  # --smoke is small enough for Flat
    assert result["rank1"] > 0.9


def test_bench_identify_postgres(tmp_path: Path) -> None:
    url = postgres_admin_url()
    saved = run_smoke(
        "bench_identify",
        tmp_path,
        "--backends",
        "postgres",
        "--postgres-url",
        url,
    )
    assert saved["backends"]["postgres"]["p50"] > 0


def test_bench_embedding(tmp_path: Path) -> None:
    saved = run_smoke("bench_embedding", tmp_path, "--workdir", str(tmp_path / "work"))
    result = saved["result"]
    assert result["images"] == 24
    assert [p["workers"] for p in result["pipeline"]] == [0, 1]
    assert all(p["images_per_s"] > 0 for p in result["pipeline"])


def test_bench_incremental(tmp_path: Path) -> None:
    saved = run_smoke("bench_incremental", tmp_path, "--workdir", str(tmp_path / "work"))
    result = saved["result"]
    (run,) = result["runs"]
    assert run["unchanged"]["embedded"] == 0 and not run["unchanged"]["rebuilt"]
    assert run["new_person"]["embedded"] == 4


def _celeba() -> Path:
    return need_dir(CELEBA)


def test_bench_embed_pretrained(tmp_path: Path) -> None:
    saved = run_smoke("bench_embed_pretrained", tmp_path, "--data", str(_celeba()))
    result = saved["result"]
    assert result["embedded"] >= 12 and result["raw_images_per_s"] > 0
    assert result["pipeline"]["0"]["pipeline_over_raw"] > 0


def test_bench_embed_gpu_prepares_and_runs_on_the_cpu(tmp_path: Path) -> None:
    """The GPU check's two steps at toy sizes: ``prepare`` on AT&T, ``run`` on this CPU."""
    att = need_dir(ATT_FACES)
    module = bench_module("bench_embed_gpu")
    carry, out = tmp_path / "carry", tmp_path / "gpu.json"
    module.main(
        [
            "prepare",
            "--data",
            str(att),
            "--home",
            str(tmp_path / "home"),
            "--photos",
            "25",
            "--out",
            str(carry),
        ]
    )
    rows = json.loads((carry / "faces.json").read_text())
    assert len(rows) >= 25 and len({r["name"] for r in rows}) == 3
    assert "sqlalchemy==" in (carry / "wheels.txt").read_text()
    module.main(
        [
            "run",
            "--carry",
            str(carry),
            "--repeat",
            "1",
            "--workers",
            "0",
            "--runs",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--out",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    assert "errors" not in saved, saved["errors"]
    assert saved["pipeline"][0]["images_per_s"] > 0 and saved["stages"]["losses"]
    assert saved["agreement"]["max_l2_gpu_vs_cpu_fp32"] == 0.0  # both on the CPU here
    assert saved["full_network_train_images_per_s"] > 0


def test_bench_fastscan(tmp_path: Path) -> None:
    saved = run_smoke("bench_fastscan", tmp_path)
    flat, fastscan = saved["rows"]
    assert flat["factory"].endswith(",Flat") and fastscan["factory"].endswith("x4fs,RFlat")
    for row in (flat, fastscan):  # exact distances either way at these sizes
        assert row["nearest_identity"] == 1.0
        assert row["nearest_distance_error_max"] < 1e-4
        assert row["us_per_probe_batch1"] > 0 and row["us_per_probe_batch8"] > 0


def test_bench_fastscan_on_descriptors_from_a_file(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    people = rng.standard_normal((200, 32)).astype(np.float32)
    vectors = np.repeat(people, 30, axis=0) + 0.1 * rng.standard_normal((6_000, 32))
    faces = tmp_path / "faces.npz"  # 3,000 photos of 2 faces each, 15 photos a person
    names = np.repeat([f"p{i}" for i in range(200)], 15)
    np.savez(faces, vectors=vectors.astype(np.float32), start=np.arange(0, 6_000, 2), names=names)
    saved = run_smoke("bench_fastscan", tmp_path, "--real", str(faces), "--k", "5")
    assert saved["data"] == str(faces) and saved["vectors"] == 6_000
    assert [row["kind"] for row in saved["rows"]] == ["ivf", "ivf-fastscan"]
    for row in saved["rows"]:  # each face's nearest other face is of its person
        assert row["nearest_identity"] > 0.95
