"""Embedding benchmark: the embed pipeline's images/s against the bare model forward pass.

A synthetic gallery (``--identities`` x ``--per-identity`` PNG faces, 92x112 grey) is imported
into a throwaway SIAMID_HOME with SQLite, and a model with the default ``EncoderConfig`` is
trained for one epoch on a few images (speed does not depend on the weights). Then, in the
same run and interleaved over ``--repeats``:

* **pipeline**: the embed flow's steps (``index_pending(full=True)``) for each DataLoader worker
  count in ``--workers``:
  read + sha256 check + decode + resize in the loader, the forward pass, the vector-store
  shard, the SQL rows, and publishing the index; images/s = images embedded / wall time;
* **raw forward**: the same encoder on the same images already decoded into one tensor, in
  batches of ``--batch-size``, the way ``encode_files`` calls it (channels_last input) and
  with plain contiguous NCHW tensors and weights;
* **decode only**: the pipeline's DataLoader (``FaceFiles``) without the model.

The ratio pipeline / raw (channels_last, the pipeline's own format) is the goal figure
(>= 0.9); it is taken per repeat, raw and pipeline measured back to back, and the median of
the per-repeat ratios is reported. Throughputs are medians over the repeats. CPU time per
image (this process and its DataLoader workers) is reported too: unlike wall time it hardly
moves when other processes load the machine, so raw/pipeline CPU time shows how much extra
work the pipeline does per image even when the wall-time figures are disturbed.

    python bench/bench_embedding.py                 # 5,000 images, workers 0/1/2
    python bench/bench_embedding.py --identities 100 --per-identity 20 --workers 0,2
    python bench/bench_embedding.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    Column,
    Elapsed,
    base_parser,
    format_table,
    median,
    prepare_gallery,
    print_header,
    start_record,
    stopwatch,
    write_result,
)
from pipelines.services.indexing import index_pending  # noqa: E402

NAME = "bench_embedding"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = base_parser(__doc__ or NAME)
    p.add_argument(
        "--members",
        type=int,
        default=None,
        help="ensemble members of the model (default: TrainConfig's, 3)",
    )
    p.add_argument("--identities", type=int, default=250, help="synthetic people (default: 250)")
    p.add_argument(
        "--per-identity",
        type=int,
        default=20,
        help="images per person (default: 20; 250 x 20 = 5,000 images)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="images per forward pass, pipeline and raw alike (default: 256)",
    )
    p.add_argument(
        "--workers", default="0,1,2", help="DataLoader worker counts to try (default: 0,1,2)"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="gallery and SIAMID_HOME folder (default: a temporary folder)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.identities, args.per_identity, args.batch_size = 6, 4, 8
        args.workers, args.repeats = "0,1", 1
    return args


# ------------------------------------------------------------------ the three measurements


def time_pipeline(
    rt: Any, model_name: str, *, workers: int, batch_size: int
) -> tuple[Elapsed, int]:
    """Time one ``index_pending(full=True)``; returns (elapsed, images embedded)."""
    with stopwatch() as elapsed:
        run = index_pending(rt, model_name, full=True, workers=workers, batch_size=batch_size)
        embedded, failed = run.embedded, run.failed
    if failed:
        raise RuntimeError(f"{len(failed)} images failed to embed, e.g. {failed[0]}")
    return elapsed, embedded


def time_forward(encoder: Any, images: Any, batch_size: int, *, channels_last: bool) -> Elapsed:
    """Time the encoder over pre-decoded ``images``, batch by batch, output to numpy."""
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with stopwatch() as elapsed, torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].contiguous(memory_format=fmt)
            encoder(x).float().cpu().numpy()
    return elapsed


def time_decode(
    items: list[tuple[int, str, str]],
    encoder_config: Any,
    limits: Any,
    *,
    workers: int,
    batch_size: int,
) -> Elapsed:
    """Time the pipeline's DataLoader (read, check, decode, resize) with no model."""
    from torch.utils.data import DataLoader

    from pipelines.services.encoding import FaceFiles

    dataset: Any = FaceFiles(items, encoder_config, limits)  # a map-style dataset, untyped
    with stopwatch() as elapsed:
        loader: DataLoader[Any] = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
        for _ in loader:
            pass
    return elapsed


# ------------------------------------------------------------------ run


@dataclass
class Samples:
    """Per-repeat timings of one measurement over ``images`` images."""

    images: int
    runs: list[Elapsed] = field(default_factory=list)

    @property
    def per_s(self) -> list[float]:
        return [self.images / r.wall for r in self.runs]

    @property
    def cpu_ms(self) -> list[float]:
        return [1e3 * r.cpu / self.images for r in self.runs]

    def summary(self) -> dict[str, Any]:
        return {
            "images_per_s": median(self.per_s),
            "cpu_ms_per_image": median(self.cpu_ms),
            "samples_per_s": self.per_s,
            "samples_cpu_ms": self.cpu_ms,
        }


def measure(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from pipelines.services.embedding import pending_images
    from pipelines.services.models import resolve_model
    from siamese.data import load_faces

    env = prepare_gallery(
        workdir,
        identities=args.identities,
        per_identity=args.per_identity,
        seed=args.seed,
        members=args.members,
    )
    model = resolve_model(env.rt.sessions, env.model_name)
    loaded = env.rt.encoders.get(model)
    encoder, cfg = loaded.module, loaded.config
    items = pending_images(env.rt, model).todo
    images = load_faces([source for _, source, _ in items], cfg)
    n = len(items)
    # The pipeline turns the cached encoder's weights channels_last (encode_files); the NCHW
    # reference gets its own contiguous copy.
    nchw = copy.deepcopy(encoder).to(memory_format=torch.contiguous_format).eval()
    workers = [int(w) for w in args.workers.split(",") if w.strip()]

    raw_cl, raw_nchw = Samples(n), Samples(n)
    pipeline = {w: Samples(n) for w in workers}
    decode = {w: Samples(n) for w in workers}
    time_pipeline(env.rt, env.model_name, workers=0, batch_size=args.batch_size)  # warm-up
    for _ in range(args.repeats):
        raw_cl.runs.append(time_forward(encoder, images, args.batch_size, channels_last=True))
        raw_nchw.runs.append(time_forward(nchw, images, args.batch_size, channels_last=False))
        for w in workers:
            elapsed, embedded = time_pipeline(
                env.rt, env.model_name, workers=w, batch_size=args.batch_size
            )
            if embedded != n:
                raise RuntimeError(f"embedded {embedded} of {n} images")
            pipeline[w].runs.append(elapsed)
            decode[w].runs.append(
                time_decode(items, cfg, env.rt.limits, workers=w, batch_size=args.batch_size)
            )

    def ratio(pipe: list[float], raw: list[float], *, inverse: bool = False) -> float:
        """Median over repeats of pipeline/raw, each pair measured back to back (robust to
        the machine's load drifting between repeats)."""
        return median([(r / p) if inverse else (p / r) for p, r in zip(pipe, raw, strict=True)])

    best_raw = [max(a, b) for a, b in zip(raw_cl.per_s, raw_nchw.per_s, strict=True)]
    return {
        "images": n,
        "image_size": [92, 112],
        "encoder_input": list(cfg.input_size),
        "batch_size": args.batch_size,
        "raw": {"channels_last": raw_cl.summary(), "nchw": raw_nchw.summary()},
        "pipeline": [
            {
                "workers": w,
                **pipeline[w].summary(),
                "decode_only": decode[w].summary(),
                "ratio_vs_raw": ratio(pipeline[w].per_s, raw_cl.per_s),
                "ratio_vs_best_raw": ratio(pipeline[w].per_s, best_raw),
                "cpu_ratio_vs_raw": ratio(pipeline[w].cpu_ms, raw_cl.cpu_ms, inverse=True),
            }
            for w in workers
        ],
    }


COLUMNS = (
    Column("what", "measurement"),
    Column("images_per_s", "images/s", ",.0f"),
    Column("range", "min-max"),
    Column("cpu_ms_per_image", "CPU ms/img", ".2f"),
    Column("decode", "decode-only img/s"),
    Column("ratio_vs_raw", "pipeline/raw(CL)", ".3f"),
    Column("cpu_ratio_vs_raw", "CPU: raw/pipeline", ".3f"),
)


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    raw = result["raw"]
    rows = [
        {"what": "raw forward, channels_last (as encode_files)", **raw["channels_last"]},
        {"what": "raw forward, NCHW", **raw["nchw"]},
    ]
    rows += [
        {
            "what": f"index_pending, workers={p['workers']}",
            **p,
            "decode": f"{p['decode_only']['images_per_s']:,.0f}",
        }
        for p in result["pipeline"]
    ]
    for row in rows:
        row["range"] = f"{min(row['samples_per_s']):,.0f}-{max(row['samples_per_s']):,.0f}"
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    record = start_record(NAME, args)
    print_header(record)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-embedding-"))
        )
        record["result"] = measure(workdir, args)
    result = record["result"]
    print(
        f"{result['images']:,} images, batch {result['batch_size']}, "
        f"median of {args.repeats} repeat(s)"
    )
    print(format_table(table_rows(result), COLUMNS))
    path = write_result(NAME, record, args.out)
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
