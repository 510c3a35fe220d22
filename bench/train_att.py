"""Train the default Siamese encoder on AT&T faces and measure verification on unseen people.

Reads the AT&T / ORL database (40 people ``s1..s40``, 10 grey 92x112 images each) in
place, splits the *identities* (default 30 train / 10 validation, by seed), trains
with the default :class:`~siamese.config.TrainConfig` and
:class:`~siamese.config.EncoderConfig` (or overrides given with ``--set``), and prints
per-epoch progress, the best validation EER, training time and thread count next
to a raw-pixel baseline on the same validation pairs. A JSON result goes to
``bench/results/`` (gitignored).

    python bench/train_att.py                      # default config, seed 0
    python bench/train_att.py --seeds 0 1          # two identity splits
    python bench/train_att.py --set epochs=20 --set widths=16,32,64   # a search run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Allow `python bench/train_att.py` from the repo root without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from siamese.config import AugmentConfig, EncoderConfig, TrainConfig  # noqa: E402
from siamese.data import encode_labels, list_identity_folders, load_faces  # noqa: E402
from siamese.distances import pairwise_distances  # noqa: E402
from siamese.metrics import eer, pair_distances_from_matrix  # noqa: E402
from siamese.training import EpochReport, load_checkpoint, split_identities, train  # noqa: E402

logger = logging.getLogger("bench.train_att")

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "att_faces"
RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _parse_value(current: Any, text: str) -> Any:
    """Parse ``text`` to the type of the field's current value."""
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if isinstance(current, tuple):
        return tuple(int(v) for v in text.split(",") if v)
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if current is None:
        if text.lower() == "none":
            return None
        try:
            return int(text)
        except ValueError:
            return text
    if text.lower() == "none":
        return None
    return text


def apply_overrides(
    overrides: list[str],
) -> tuple[TrainConfig, EncoderConfig]:
    """``key=value`` overrides; keys name a field of TrainConfig, EncoderConfig or
    AugmentConfig (prefix ``aug.``), e.g. ``margin=0.8``, ``widths=32,64``, ``aug.hflip_prob=0``."""
    train_kw: dict[str, Any] = {}
    enc_kw: dict[str, Any] = {}
    aug_kw: dict[str, Any] = {}
    tdef, edef, adef = TrainConfig(), EncoderConfig(), AugmentConfig()
    preset = None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set needs key=value, got {item!r}")
        if key == "preset" and value == "chopra2005":
            preset = EncoderConfig.chopra2005()
            continue
        if key.startswith("aug."):
            name = key[4:]
            aug_kw[name] = _parse_value(getattr(adef, name), value)
        elif hasattr(edef, key):
            enc_kw[key] = _parse_value(getattr(edef, key), value)
        elif hasattr(tdef, key):
            train_kw[key] = _parse_value(getattr(tdef, key), value)
        else:
            raise SystemExit(f"unknown config field {key!r}")
    enc = dataclasses.replace(preset or edef, **enc_kw)
    aug = dataclasses.replace(adef, **aug_kw)
    return dataclasses.replace(tdef, augment=aug, **train_kw), enc


def raw_pixel_eer(
    paths: list[Path], labels: np.ndarray, val_ids: np.ndarray, ecfg: EncoderConfig
) -> dict[str, float]:
    """EER of plain L2 distance between validation images (full 92x112 pixels in [0, 1],
    and the encoder-sized input), the baseline an encoder must beat."""
    from PIL import Image

    mask = np.isin(labels, val_ids)
    vpaths = [p for p, m in zip(paths, mask, strict=True) if m]
    vlabels = labels[mask]
    out = {}
    full = np.stack(
        [np.asarray(Image.open(p).convert("L"), dtype=np.float64).ravel() / 255.0 for p in vpaths]
    )
    g, i = pair_distances_from_matrix(pairwise_distances(full, full, "l2"), vlabels)
    out["raw_pixels_full_l2"] = eer(g, i)[0]
    small = load_faces(vpaths, ecfg).flatten(1).double().numpy()
    g, i = pair_distances_from_matrix(pairwise_distances(small, small, "l2"), vlabels)
    out["raw_pixels_input_l2"] = eer(g, i)[0]
    return out


def run_one(
    paths: list[Path],
    labels: np.ndarray,
    classes: list[str],
    val_ids: np.ndarray,
    seed: int,
    name: str,
    tcfg: TrainConfig,
    ecfg: EncoderConfig,
    tag: str,
    quiet: bool,
) -> dict[str, Any]:
    n_ids = len(classes)
    tcfg = dataclasses.replace(tcfg, seed=seed, val_fraction=len(val_ids) / n_ids)
    images = load_faces(paths, ecfg)
    baseline = raw_pixel_eer(paths, labels, val_ids, ecfg)
    print(
        f"[{name}] {len(paths)} images, {n_ids} people -> {n_ids - len(val_ids)} train / "
        f"{len(val_ids)} validation people: {', '.join(classes[i] for i in val_ids)}",
        flush=True,
    )

    def on_epoch(rep: EpochReport) -> None:
        if not quiet:
            print(f"[{name}] {rep.line()}", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    ckpt = RESULTS / f"att_{tag}_{name.replace(' ', '')}.pt"
    result = train(
        images,
        labels,
        tcfg,
        ecfg,
        checkpoint_path=ckpt,
        on_epoch=on_epoch,
        val_identities=val_ids,
    )

    # Re-evaluate from the checkpoint alone: the figure reported is the file's.
    loaded = load_checkpoint(ckpt)
    from siamese.training import evaluate

    vmask = np.isin(labels, val_ids)
    rep = evaluate(loaded.net, images[torch.from_numpy(vmask)], labels[vmask], tcfg.distance)
    assert abs(rep.eer - (result.best_eer or 0.0)) < 1e-6, (rep.eer, result.best_eer)
    line = (
        f"[{name}] RESULT val EER {100 * rep.eer:.2f}% (threshold {rep.threshold:.3f}, "
        f"best epoch {result.best_epoch}/{result.epochs_run}) | raw pixels "
        f"{100 * baseline['raw_pixels_full_l2']:.2f}% (92x112) / "
        f"{100 * baseline['raw_pixels_input_l2']:.2f}% "
        f"({ecfg.input_size[0]}x{ecfg.input_size[1]}) | "
        f"train {result.seconds:.0f}s on {torch.get_num_threads()} thread(s)"
    )
    print(line, flush=True)
    return {
        "run": name,
        "seed": seed,
        "val_eer": rep.eer,
        "last_epoch_val_eer": result.history[-1].val.eer if result.history[-1].val else None,
        "val_threshold": rep.threshold,
        "genuine_quantiles": rep.genuine_quantiles,
        "impostor_quantiles": rep.impostor_quantiles,
        "n_genuine_pairs": rep.n_genuine,
        "n_impostor_pairs": rep.n_impostor,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "train_seconds": result.seconds,
        "val_people": [classes[i] for i in val_ids],
        "baseline": baseline,
        "history": [
            {
                "epoch": h.epoch,
                "loss": h.train_loss,
                "val_eer": None if h.val is None else h.val.eer,
                "seconds": h.seconds,
            }
            for h in result.history
        ],
        "checkpoint": str(ckpt),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="AT&T faces folder (s1..s40)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="split + training seeds")
    parser.add_argument("--val-people", type=int, default=10, help="identities held out (of 40)")
    parser.add_argument(
        "--folds",
        type=int,
        default=0,
        help="identity-wise cross-validation: split the people into this many folds (by the "
        "first seed) and validate on each in turn, so every person is an unseen one once",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tag", default="default", help="name of the result files")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if not args.root.is_dir():
        print(f"AT&T faces not found at {args.root}; pass --root", file=sys.stderr)
        return 2
    tcfg, ecfg = apply_overrides(args.overrides)
    print(
        f"threads: {torch.get_num_threads()} | CPU: {cpu_model()} ({os.cpu_count()} logical) | "
        f"torch {torch.__version__}",
        flush=True,
    )
    print(f"encoder: {ecfg}\ntrain:   {tcfg}", flush=True)
    paths, names = list_identity_folders(args.root)
    labels, classes = encode_labels(names)
    plan: list[tuple[str, int, np.ndarray]] = []
    if args.folds:
        perm = np.random.default_rng(args.seeds[0]).permutation(len(classes))
        for f, fold in enumerate(np.array_split(perm, args.folds)):
            plan.append((f"seed {args.seeds[0]} fold {f}", args.seeds[0], np.sort(fold)))
    else:
        for s in args.seeds:
            _, val_ids = split_identities(labels, args.val_people / len(classes), s)
            plan.append((f"seed {s}", s, val_ids))
    t0 = time.perf_counter()
    runs = [
        run_one(paths, labels, classes, val, seed, name, tcfg, ecfg, args.tag, args.quiet)
        for name, seed, val in plan
    ]
    eers = [r["val_eer"] for r in runs]
    summary = {
        "tag": args.tag,
        "overrides": args.overrides,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "encoder_config": dataclasses.asdict(ecfg),
        "train_config": dataclasses.asdict(tcfg),
        "mean_val_eer": float(np.mean(eers)),
        "mean_last_epoch_val_eer": float(np.mean([r["last_epoch_val_eer"] for r in runs])),
        "mean_train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
        "runs": runs,
        "wall_seconds": time.perf_counter() - t0,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"att_{args.tag}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(
        f"SUMMARY {args.tag}: val EER "
        + ", ".join(f"{r['run']} {100 * r['val_eer']:.2f}%" for r in runs)
        + f" (mean {100 * summary['mean_val_eer']:.2f}%), mean train "
        f"{summary['mean_train_seconds']:.0f}s, {summary['threads']} thread(s) -> {out}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
