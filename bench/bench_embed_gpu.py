"""dlib-resnet on a GPU: embedding images/s (pipeline vs raw forward) and a fine-tuning check.

Two steps, because the GPU machine has no dlib and no network:

``prepare`` (here, with the project's environment) picks whole people of ``--data`` until
``--photos`` photos with a detected face, and writes into ``--out``: the photos
(``photos/<person>/<file>``), ``faces.json`` (each photo's chosen face, from the evaluation's
detection cache, so no detector is needed there) and the face ResNet's ``.dat`` in a folder laid
out like the ``face_recognition_models`` package.

``run`` (on the GPU machine, ``--carry`` that folder) measures, in one process:

* **pipeline**: ``pipelines.services.encoding.encode_files`` -- the embed flow's encoding step:
  file read + decode + dlib chip in ``--workers`` DataLoader workers, pinned memory, the folded
  network in channels_last under CUDA autocast (float16) -- over the photos listed ``--repeat``
  times (each read and decoded again);
* **raw forward**: the same module on the same chips, already cut, stacked and on the GPU, in
  batches of ``--batch-size`` (and float32 for comparison);
* the descriptors' agreement: GPU float16 vs GPU float32 vs CPU float32 (max L2 distance);
* **fine-tuning**: ``train_stages`` (the ``--tune last-stages`` mode) on the photos' trunk
  activations, bfloat16 autocast on CUDA, and one full-network forward+backward throughput;
* **detection**: dlib's CNN face detector in torch (``faces.mmod.MmodDetector``) on the photos
  (decoded once), in batches of ``--detect-batches`` photos, float16 autocast on CUDA: photos/s,
  and how many photos give the same boxes (within 1 px) as the float32 CPU run on the first 64.

    python bench/bench_embed_gpu.py prepare --photos 1200 --out .devdata
    python3 bench/bench_embed_gpu.py run --carry .devdata --out result.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "celeba_wild"
#: What the GPU machine's Python lacks for the encoding service (it has torch, numpy, Pillow).
WHEELS = (
    "sqlalchemy",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-dotenv",
    "alembic",
    "mako",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
)


def prepare(args: argparse.Namespace) -> None:
    from bench.common import open_bench_runtime
    from pipelines.services import eval_steps, evaluation
    from pipelines.services.model_files import FACE_RESNET, model_file

    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    (out / "photos").mkdir(parents=True)
    rt = open_bench_runtime(args.home)
    paths, names = evaluation.load_dataset(args.data)
    # Whole people, in folder order, until --photos photos have a face (detect only those).
    rows: list[dict[str, Any]] = []
    people = sorted(set(names), key=names.index)
    for person in people:
        if len(rows) >= args.photos:
            break
        mine = [p for p, n in zip(paths, names, strict=True) if n == person]
        found = eval_steps.detect_dataset(rt, mine, [person] * len(mine))
        for path, face in zip(found.paths, found.faces, strict=True):
            dest = out / "photos" / person / Path(path).name
            dest.parent.mkdir(exist_ok=True)
            shutil.copyfile(path, dest)
            rows.append(
                {"path": str(dest.relative_to(out)), "name": person, "face": face.to_dict()}
            )
    people = sorted({r["name"] for r in rows})
    (out / "faces.json").write_text(json.dumps(rows))
    pkg = out / "face_recognition_models"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    shutil.copyfile(model_file(FACE_RESNET), pkg / "models" / FACE_RESNET)
    from pipelines.services.model_files import CNN_FACE_DETECTOR

    shutil.copyfile(model_file(CNN_FACE_DETECTOR), pkg / "models" / CNN_FACE_DETECTOR)
    (out / "wheels.txt").write_text("".join(f"{w}=={version(w)}\n" for w in WHEELS))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{len(rows)} photos of {len(people)} people, {size / 2**20:.1f} MiB in {out}")


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Sections:
    """Runs each measurement on its own: one that fails is recorded and the others still run
    (a GPU machine is lent for minutes; a lost run costs one of them)."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def __call__(self, name: str, fn: Any) -> Any:
        import traceback

        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - recorded, the next section runs
            traceback.print_exc()
            self.record.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
            return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    if importlib.util.find_spec("face_recognition_models") is None:  # the GPU machine
        sys.path.insert(0, str(args.carry.resolve()))  # the carried copy of the package
    from faces.face import Face
    from pipelines.services.crops import CropSpec
    from pipelines.services.encoding import FaceFiles, encode_files
    from pipelines.services.models import PRETRAINED_INPUT, LoadedEncoder, backbone_file
    from siamese.device import resolve_device
    from siamese.dlib_resnet import fold_for_inference, load_dlib_resnet
    from siamese.images import DecodeLimits
    from siamese.pretrained import DlibFaceEncoder, DlibTrunk, TuneConfig, train_stages

    device = resolve_device("auto")
    rows = json.loads((args.carry / "faces.json").read_text())
    paths = [str(args.carry / r["path"]) for r in rows]
    faces = [Face.from_dict(r["face"]) for r in rows]
    names = np.asarray([r["name"] for r in rows])
    n = len(rows)
    spec = CropSpec.dlib_chips()
    limits = DecodeLimits()
    record: dict[str, Any] = {
        "benchmark": "bench_embed_gpu",
        "command": " ".join(sys.argv),
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "photos": n,
        "people": int(np.unique(names).size),
        "repeat": args.repeat,
        "batch_size": args.batch_size,
    }
    section = Sections(record)
    print(json.dumps({k: record[k] for k in ("device", "cpus", "torch", "photos", "people")}))
    module = DlibFaceEncoder(fold_for_inference(load_dlib_resnet(backbone_file()))).eval()
    encoder = LoadedEncoder(module, PRETRAINED_INPUT)
    by_index = dict(enumerate(faces))
    chips = FaceFiles(
        [(i, p, None) for i, p in enumerate(paths)], PRETRAINED_INPUT, limits, spec, by_index
    )
    x_cpu = torch.stack([chips[i][0] for i in range(n)])
    x = x_cpu.to(device).contiguous(memory_format=torch.channels_last)
    module = module.to(device).to(memory_format=torch.channels_last)
    total = n * args.repeat

    def raw(batch: int, amp: bool) -> float:
        """The network alone on chips already on the device, ``total`` images."""
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
            for start in range(0, min(n, 4 * batch), batch):  # warm-up
                module(x[start : start + batch])
            _sync()
            t0 = time.perf_counter()
            done = 0
            while done < total:
                start = done % n
                b = x[start : start + min(batch, n - start, total - done)]
                module(b)
                done += b.shape[0]
            _sync()
        return total / (time.perf_counter() - t0)

    def raw_rows() -> list[dict[str, Any]]:
        out = []
        for batch in sorted({64, args.batch_size, 1024}):
            for amp in (True, False):
                rate = raw(batch, amp)
                out.append({"batch": batch, "amp": amp, "images_per_s": round(rate, 1)})
                print(f"raw forward batch {batch:4d} amp {amp!s:5}: {rate:9.1f} images/s")
        return out

    record["raw"] = section("raw", raw_rows) or []

    def agreement() -> dict[str, float]:
        with torch.inference_mode():
            with torch.autocast(device.type, enabled=True):
                d16 = torch.cat([module(x[i : i + 256]).float() for i in range(0, n, 256)]).cpu()
            d32 = torch.cat([module(x[i : i + 256]).float() for i in range(0, n, 256)]).cpu()
            cpu_module = DlibFaceEncoder(
                fold_for_inference(load_dlib_resnet(backbone_file()))
            ).eval()
            dcpu = cpu_module(x_cpu[:64].contiguous(memory_format=torch.channels_last))
        out = {
            "max_l2_amp_vs_fp32": float((d16 - d32).norm(dim=1).max()),
            "median_l2_amp_vs_fp32": float((d16 - d32).norm(dim=1).median()),
            "max_l2_gpu_vs_cpu_fp32": float((d32[:64] - dcpu).norm(dim=1).max()),
        }
        print(json.dumps(out))
        return out

    record["agreement"] = section("agreement", agreement)

    # Pipeline: the embed flow's encoding step over the photos, each listed --repeat times.
    items = [(k, paths[k % n], None) for k in range(total)]
    by_key = {k: faces[k % n] for k in range(total)}

    def pipeline(workers: int) -> dict[str, Any]:
        encode_files(
            encoder,
            items[: 2 * args.batch_size],
            limits,
            spec=spec,
            faces=by_key,
            batch_size=args.batch_size,
            workers=workers,
        )  # warm-up: workers, cuDNN
        rates = []
        for _ in range(args.runs):
            _sync()
            t0 = time.perf_counter()
            enc = encode_files(
                encoder,
                items,
                limits,
                spec=spec,
                faces=by_key,
                batch_size=args.batch_size,
                workers=workers,
            )
            _sync()
            rates.append(total / (time.perf_counter() - t0))
            assert not enc.errors and enc.vectors.shape == (total, 128), enc.errors
        rate = statistics.median(rates)
        raw_amp = [r for r in record["raw"] if r["batch"] == args.batch_size and r["amp"]]
        ratio = rate / raw_amp[0]["images_per_s"] if raw_amp else float("nan")
        print(f"pipeline workers {workers:2d}: {rate:8.1f} images/s, pipeline/raw {ratio:.3f}")
        return {
            "workers": workers,
            "images_per_s": round(rate, 1),
            "pipeline_over_raw": round(ratio, 3),
        }

    pipe = [
        section(f"pipeline-{w}", lambda w=w: pipeline(w))
        for w in (int(w) for w in args.workers.split(","))
    ]
    record["pipeline"] = [r for r in pipe if r is not None]
    best = (
        max(record["pipeline"], key=lambda r: r["images_per_s"])["workers"]
        if record["pipeline"]
        else 0
    )

    def decode_only() -> dict[str, Any]:
        """Decode + chip alone in the same workers: what bounds the pipeline on a fast GPU."""
        loader = DataLoader(
            FaceFiles(items, PRETRAINED_INPUT, limits, spec, by_key),
            batch_size=args.batch_size,
            num_workers=best,
        )
        t0 = time.perf_counter()
        for _ in loader:
            pass
        rate = total / (time.perf_counter() - t0)
        print(f"decode + chip only, {best} workers: {rate:.1f} images/s")
        return {"workers": best, "images_per_s": round(rate, 1)}

    record["decode_only"] = section("decode_only", decode_only)

    def stages() -> dict[str, Any]:
        """Fine-tuning the last stages (the --tune last-stages mode) on the device."""
        trunk = LoadedEncoder(
            DlibTrunk(fold_for_inference(load_dlib_resnet(backbone_file()))), PRETRAINED_INPUT
        )
        t0 = time.perf_counter()
        h = encode_files(
            trunk,
            [(i, p, None) for i, p in enumerate(paths)],
            limits,
            spec=spec,
            faces=by_index,
            batch_size=args.batch_size,
            workers=best,
        ).dense(n)
        trunk_s = time.perf_counter() - t0
        labels = np.unique(names, return_inverse=True)[1]
        tune = TuneConfig(mode="last-stages", epochs=args.epochs, seed=0)
        result = train_stages(load_dlib_resnet(backbone_file()), h, labels, tune, device=device)
        batches = max(10, n // (tune.identities_per_batch * tune.images_per_identity))
        out = {
            "trunk_activations_s": round(trunk_s, 2),
            "epochs": args.epochs,
            "batches_per_epoch": batches,
            "seconds": round(result.seconds, 2),
            "losses": [round(v, 4) for v in result.losses],
            "faces_per_s": round(args.epochs * batches * 128 / result.seconds, 1),
        }
        print(json.dumps(out))
        return out

    record["stages"] = section("stages", stages)

    def full_network() -> float:
        """The whole network, forward + backward (what fine-tuning everything would cost)."""
        full = load_dlib_resnet(backbone_file()).to(device).train()
        full = full.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        opt = torch.optim.AdamW(full.parameters(), lr=1e-6)
        xb = ((x[:128] * 255.0 - full.mean_rgb.view(1, 3, 1, 1)) / 256.0).contiguous(
            memory_format=torch.channels_last
        )
        t0 = time.perf_counter()
        for step in range(13):
            if step == 3:
                _sync()
                t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = full(xb).float().pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        _sync()
        rate = 10 * 128 / (time.perf_counter() - t0)
        print(f"full network forward+backward: {rate:.1f} images/s")
        return round(rate, 1)

    record["full_network_train_images_per_s"] = section("full_network", full_network)
    record["detection"] = section("detection", lambda: detection(args, paths, device))
    if device.type == "cuda":
        record["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return record


def detection(args: argparse.Namespace, paths: list[str], device: Any) -> dict[str, Any]:
    """dlib's CNN face detector in torch: photos/s per batch size, and agreement with the CPU."""
    import torch
    from PIL import Image

    from faces.mmod import MmodDetector
    from pipelines.services.model_files import CNN_FACE_DETECTOR, model_file

    images = []
    for path in paths:
        with Image.open(path) as im:
            images.append(np.asarray(im.convert("RGB")))
    out: dict[str, Any] = {"photos": len(images)}
    gpu = MmodDetector(model_file(CNN_FACE_DETECTOR), device=device, max_batch_pixels=10**12)
    for batch in (int(b) for b in args.detect_batches.split(",")):
        gpu.detect(images[:batch])  # warm-up (cuDNN picks its algorithms)
        _sync()
        t0 = time.perf_counter()
        for i in range(0, len(images), batch):
            gpu.detect(images[i : i + batch])
        _sync()
        out[f"photos_per_s_batch_{batch}"] = round(len(images) / (time.perf_counter() - t0), 1)
        print(f"detection, batches of {batch}: {out[f'photos_per_s_batch_{batch}']} photos/s")
    cpu = MmodDetector(model_file(CNN_FACE_DETECTOR))
    sample = images[:64]
    same = 0
    for a, b in zip(gpu.detect(sample), cpu.detect(sample), strict=True):
        same += len(a) == len(b) and all(
            max(abs(u - v) for u, v in zip(x.rect, y.rect, strict=True)) <= 1
            for x, y in zip(a, b, strict=True)
        )
    out["same_boxes_as_cpu_float32"] = f"{same}/{len(sample)}"
    if torch.cuda.is_available():
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(out))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="step", required=True)
    prep = sub.add_parser("prepare", help="write the folder the GPU run reads")
    prep.add_argument("--data", type=Path, default=DEFAULT_DATA)
    prep.add_argument("--home", type=Path, required=True, help="SIAMID_HOME (detection cache)")
    prep.add_argument("--photos", type=int, default=1200)
    prep.add_argument("--out", type=Path, required=True)
    go = sub.add_parser("run", help="measure (on the GPU machine)")
    go.add_argument("--carry", type=Path, required=True)
    go.add_argument("--repeat", type=int, default=8, help="times each photo is listed")
    go.add_argument("--batch-size", type=int, default=256)
    go.add_argument("--workers", default="4,8,14", help="DataLoader worker counts")
    go.add_argument("--runs", type=int, default=2, help="timed pipeline runs per worker count")
    go.add_argument("--epochs", type=int, default=3, help="last-stages fine-tuning epochs")
    go.add_argument("--detect-batches", default="32,128", help="photos per detection forward")
    go.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.step == "prepare":
        prepare(args)
        return
    record = run(args)
    if args.out is not None:
        args.out.write_text(json.dumps(record, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
