"""Shared helpers of the siamid benchmarks (``bench/bench_*.py``).

What lives here: thread pinning and the hardware record every result carries, timing
statistics, the printed table and the JSON result file, throwaway ``SIAMID_HOME`` runtimes
(SQLite or a temporary PostgreSQL database), a synthetic image gallery with a quickly trained
model, synthetic face-like embeddings, exact ground truth, and the deepface-style brute-force
baseline that the index and identify benchmarks compare against.

The scripts are run from the repository root (``python bench/bench_index.py``); importing this
module puts the root on ``sys.path`` so the ``siamese``/``index``/``storage``/``pipelines``
packages resolve without installing anything.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import shutil
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

RESULTS_DIR = REPO_ROOT / "bench" / "results"
#: Where the PostgreSQL admin URL comes from when ``--postgres-url`` is not given.
POSTGRES_URL_ENV = ("SIAMID_BENCH_POSTGRES_URL", "SIAMID_TEST_POSTGRES_URL")


# ------------------------------------------------------------------ machine and threads


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_total_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def rss_bytes(*, settle: bool = True) -> int:
    """Resident set size of this process now (Linux; 0 where /proc is missing).

    With ``settle`` the garbage collector runs and glibc's ``malloc_trim`` hands freed heap
    pages back first, so that differences measure memory still held, not allocator slack.
    """
    if settle:
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    return 0


def busy_processes(pattern: str = "train_att.py") -> list[str]:
    """Command lines of other processes matching ``pattern`` (they distort timings)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if int(proc.name) == os.getpid():
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if pattern in cmd:
                found.append(cmd.strip())
    return found


def set_threads(threads: int) -> dict[str, int]:
    """Pin torch and faiss (OpenMP) to ``threads``; returns the counts in force, for the record."""
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    return {"torch": torch.get_num_threads(), "faiss_omp": faiss.omp_get_max_threads()}


@contextlib.contextmanager
def faiss_threads(threads: int) -> Iterator[None]:
    """Run the block with faiss' OpenMP pool at ``threads``, then restore the previous count.

    Single-probe searches are measured with 1 thread by default: a query has little work to
    split, and on a small shared machine OpenMP's fork/join (spinning threads waiting for a
    descheduled peer) can cost milliseconds.
    """
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def hardware_info() -> dict[str, Any]:
    """Cores, CPU model, memory and library versions: the context every result is read in."""
    import faiss
    import torch

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_bytes": memory_total_bytes(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "busy_train_att": len(busy_processes()),
        "env_threads": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
            if k in os.environ
        },
    }


# ------------------------------------------------------------------ timing statistics


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentiles(seconds: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ms, ...}`` of a list of latencies given in seconds."""
    if not seconds:
        return {f"p{q:g}": math.nan for q in qs}
    arr = np.asarray(seconds, dtype=np.float64) * 1e3
    return {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}


def time_calls(
    fn: Callable[[int], Any], n: int, *, max_seconds: float | None = None, warmup: int = 3
) -> list[float]:
    """Latency in seconds of ``fn(i)`` for ``i`` in ``range(n)``, after ``warmup`` untimed calls.

    Stops early (keeping at least 5 samples) once ``max_seconds`` have been spent.
    """
    for i in range(min(warmup, n)):
        fn(i)
    out: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
        if max_seconds is not None and len(out) >= 5 and time.perf_counter() - start > max_seconds:
            break
    return out


@dataclass
class Elapsed:
    """Wall seconds and CPU seconds (user + system, this process and the children it reaped,
    e.g. DataLoader workers) of a :func:`stopwatch` block."""

    wall: float = 0.0
    cpu: float = 0.0


def _cpu_seconds() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@contextlib.contextmanager
def stopwatch() -> Iterator[Elapsed]:
    """Time a block: ``with stopwatch() as t: ...`` then ``t.wall``, ``t.cpu``.

    CPU time is much less sensitive than wall time to other processes on a shared machine,
    so it shows how much work a step does even when its wall time is disturbed.
    """
    elapsed = Elapsed()
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed.wall = time.perf_counter() - wall0
        elapsed.cpu = _cpu_seconds() - cpu0


# ------------------------------------------------------------------ output


@dataclass(frozen=True)
class Column:
    """One printed column: the row key, its header and a format spec (or a callable)."""

    key: str
    header: str
    fmt: str | Callable[[Any], str] = ""


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A plain-text table, right-aligned, missing values shown as ``-``."""

    def cell(row: dict[str, Any], col: Column) -> str:
        value = row.get(col.key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if callable(col.fmt):
            return col.fmt(value)
        return format(value, col.fmt) if col.fmt else str(value)

    body = [[cell(r, c) for c in columns] for r in rows]
    widths = [max([len(c.header)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.header.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def write_result(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``payload`` as JSON to ``out`` or ``bench/results/<name>-<utc time>.json``.

    Adds when it finished and whether training runs were busy then (see ``start_record``).
    """
    payload = {
        **payload,
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "busy_train_att_at_end": len(busy_processes()),
    }
    path = out or RESULTS_DIR / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def base_parser(description: str) -> argparse.ArgumentParser:
    """Options every benchmark shares: threads, repeats, seed, output file, smoke preset."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch intra-op and faiss OpenMP threads (default: 2)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="repeats per measurement; medians are reported (default: 3)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON result path (default: bench/results/<name>-<time>.json)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes that finish in seconds (CI); overrides the size options",
    )
    return parser


def start_record(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The common head of a result: what ran, when, where and with how many threads."""
    threads = set_threads(args.threads)
    record: dict[str, Any] = {
        "benchmark": name,
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0].endswith(f"{name}.py") else None,
        "options": {k: v for k, v in vars(args).items() if k != "out"},
        "threads": threads,
        "hardware": hardware_info(),
    }
    if record["hardware"]["busy_train_att"]:
        print(
            f"warning: {record['hardware']['busy_train_att']} train_att.py process(es) are "
            "running: timings are distorted",
            file=sys.stderr,
        )
    return record


def print_header(record: dict[str, Any]) -> None:
    hw = record["hardware"]
    mem = hw["memory_bytes"] / 2**30 if hw["memory_bytes"] else math.nan
    print(
        f"{record['benchmark']}: {hw['cpu_model']}, {hw['cpus_usable']} usable CPUs, "
        f"{mem:.1f} GiB; threads torch={record['threads']['torch']} "
        f"faiss={record['threads']['faiss_omp']}; torch {hw['torch']}, faiss {hw['faiss']}"
    )


# ------------------------------------------------------------------ runtimes and databases


def open_bench_runtime(home: Path, database_url: str | None = None, threads: int = 0) -> Any:
    """A :class:`pipelines.services.runtime.Runtime` on ``home``: SQLite there unless
    ``database_url``.

    Settings are passed explicitly, so ``SIAMID_*`` variables of the caller do not leak in.
    """
    from pipelines.services.runtime import Runtime
    from pipelines.settings import Settings

    url = database_url or f"sqlite:///{home.resolve() / 'siamid.db'}"
    settings = Settings(home=home, database_url=url, torch_threads=threads)
    rt = Runtime(settings)
    _ = rt.engine  # create the folders and migrate the schema now, outside any timing
    return rt


def postgres_admin_url(given: str | None) -> str | None:
    """``--postgres-url``, else the first of :data:`POSTGRES_URL_ENV` that is set."""
    if given:
        return given
    return next((os.environ[k] for k in POSTGRES_URL_ENV if os.environ.get(k)), None)


@contextlib.contextmanager
def temporary_postgres_database(admin_url: str, prefix: str = "bench") -> Iterator[str]:
    """Create ``<prefix>_<random>`` on the server of ``admin_url``; yield its URL; drop it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ------------------------------------------------------------------ image gallery + model


@dataclass
class GalleryEnv:
    """A synthetic gallery imported into a throwaway SIAMID_HOME, with a registered model."""

    rt: Any
    root: Path
    model_name: str
    images: int


def prepare_gallery(
    workdir: Path,
    *,
    identities: int,
    per_identity: int,
    seed: int,
    train_people: int = 8,
    train_per_person: int = 4,
    members: int | None = None,
    template: str | None = None,
) -> GalleryEnv:
    """Render and import a synthetic gallery, then train and register a 1-epoch model.

    The model has the default :class:`~siamese.config.EncoderConfig` and is trained for one
    epoch on ``train_per_person`` images of each of ``train_people`` people only (enough for
    the identity-disjoint validation split): the benchmarks measure speed, which does not
    depend on how well the weights separate people. ``members``: ensemble size
    (``TrainConfig.members``; ``None`` = the default). ``template``: the scoring's template
    (``best`` / ``mean``; ``None`` = the backbone's default).
    """
    from dataclasses import replace

    from pipelines.services.gallery import import_items, scan_image_folder
    from pipelines.services.training import (
        TrainingSet,
        TrainOptions,
        register_trained,
        run_training,
        training_set,
    )
    from siamese.synthetic import generate_gallery

    root = workdir / "gallery"
    generate_gallery(root, identities=identities, per_identity=per_identity, seed=seed)
    rt = open_bench_runtime(workdir / "home")
    summary = import_items(scan_image_folder(root), sessions=rt.sessions, limits=rt.limits)
    options = TrainOptions(seed=seed, epochs=1, members=members, template=template)
    config, encoder = options.configs()
    config = replace(config, identities_per_batch=4, images_per_identity=2, patience=0)
    everything = training_set(rt, None)
    chosen: dict[str, list[str]] = {}
    for path, person in zip(everything.paths, everything.names, strict=True):
        if len(chosen.get(person, ())) < train_per_person and (
            person in chosen or len(chosen) < train_people
        ):
            chosen.setdefault(person, []).append(path)
    subset = TrainingSet(
        [p for paths in chosen.values() for p in paths],
        [person for person, paths in chosen.items() for _ in paths],
    )
    name = f"bench-{uuid.uuid4().hex[:8]}"
    checkpoint = rt.settings.checkpoints_dir / f"{name}.pt"
    validation = run_training(subset, config, encoder, checkpoint)
    register_trained(rt, name, checkpoint, config, encoder, validation, scoring=options.scoring())
    return GalleryEnv(rt, root, name, summary.new)


# ------------------------------------------------------------------ synthetic embeddings


@dataclass
class FaceEmbeddings:
    """Clustered unit vectors: ``per_identity`` images around each identity's centre.

    Row ``i`` belongs to identity ``i // per_identity``. An image is its identity's unit
    centre plus isotropic Gaussian noise of total norm ~``spread``, re-normalised: at
    ``spread`` s two images of one person lie ~``sqrt(2) * s / sqrt(1 + s^2)`` apart while
    different people lie ~``sqrt(2)`` apart, as with a face encoder's L2-normalised output.
    """

    vectors: np.ndarray  # (n, d) float32, unit rows
    centers: np.ndarray  # (identities, d) float32, unit rows
    per_identity: int
    spread: float

    @property
    def n(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def identity_of(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows, np.int64) // self.per_identity

    def probes(
        self, count: int, *, seed: int, identities: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """New images (mated probes) of ``count`` random identities among the first
        ``identities`` (default: all): returns (vectors (count, d), identity indices)."""
        rng = np.random.default_rng([seed, 7])
        pool = identities or self.centers.shape[0]
        who = rng.integers(0, pool, size=count)
        return _jitter(self.centers[who], self.spread, rng), who


def _jitter(centers: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    d = centers.shape[1]
    noise = rng.standard_normal(centers.shape, dtype=np.float32)
    noise *= np.float32(spread / math.sqrt(d))
    noise += centers
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return noise


def face_embeddings(
    n: int,
    *,
    dim: int = 128,
    per_identity: int = 10,
    spread: float = 0.6,
    seed: int = 0,
    chunk: int = 100_000,
) -> FaceEmbeddings:
    """``n`` synthetic face embeddings (see :class:`FaceEmbeddings`), made in chunks so the
    peak memory stays near the output's own size."""
    rng = np.random.default_rng([seed, 3])
    identities = -(-n // per_identity)
    centers = rng.standard_normal((identities, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    vectors = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        vectors[rows] = _jitter(centers[rows // per_identity], spread, rng)
    return FaceEmbeddings(vectors, centers, per_identity, spread)


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int = 1) -> np.ndarray:
    """Row numbers of the exact ``k`` nearest (L2) neighbours of each query (faiss Flat)."""
    import faiss

    flat = faiss.IndexFlatL2(vectors.shape[1])
    flat.add(vectors)
    _, rows = flat.search(np.ascontiguousarray(queries, np.float32), k)
    return rows


# ------------------------------------------------------------------ brute-force baseline


class DeepFaceStyleBaseline:
    """What deepface's ``find`` does per probe, as the speed baseline to beat.

    The gallery lives in a pandas DataFrame, one embedding per row in an ``embedding``
    column next to the identity. For a probe, the column is taken as one stacked matrix, the
    distance to every row is computed with numpy and the arg-min row is the answer.

    Favourable to the baseline: the column is stacked into a float32 matrix once
    (``stack_seconds`` records what that costs; deepface does it on every call), and the
    distances are one vectorised numpy expression, not a Python loop over rows.
    """

    def __init__(self, vectors: np.ndarray, identities: Sequence[Any] | np.ndarray) -> None:
        import pandas as pd

        self.frame = pd.DataFrame({"identity": identities, "embedding": list(vectors)})
        t0 = time.perf_counter()
        self.matrix = np.stack(self.frame["embedding"].to_numpy()).astype(np.float32, copy=False)
        self.stack_seconds = time.perf_counter() - t0

    def find(self, probe: np.ndarray, rows: int | None = None) -> tuple[Any, float]:
        """(identity, L2 distance) of the nearest gallery row to one probe vector, among the
        first ``rows`` rows (default: all)."""
        matrix = self.matrix if rows is None else self.matrix[:rows]
        distances = np.linalg.norm(matrix - probe, axis=1)
        best = int(np.argmin(distances))
        return self.frame["identity"].iat[best], float(distances[best])

    def latencies(
        self, probes: np.ndarray, *, count: int, max_seconds: float, rows: int | None = None
    ) -> list[float]:
        """Seconds per :meth:`find` for up to ``count`` probes (time-capped)."""
        count = min(count, len(probes))
        return time_calls(
            lambda i: self.find(probes[i], rows), count, max_seconds=max_seconds, warmup=1
        )

    def close(self) -> None:
        del self.frame, self.matrix
        gc.collect()


# ------------------------------------------------------------------ server processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server started next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def siamid_command() -> list[str]:
    """The ``siamid`` console script of this interpreter's environment (or the same entry point
    through ``python -c`` where the script is not installed), to start as a child process."""
    script = shutil.which("siamid", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", "from pipelines.cli import main; main()"]
