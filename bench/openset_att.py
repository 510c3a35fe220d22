"""Search tool for the open-set AT&T protocol of ``siamid evaluate`` (issue 5).

Runs the same identity-disjoint folds as ``pipelines.services.evaluation`` (same ``split_people``
and ``score_fold``), but in one process without Prefect or a database, so a training
configuration (``--set key=value``, as in ``bench/train_att.py``) can be compared on
the issue's figures: DIR at FPIR 1% on the test non-mated searches, and the realised
FPIR at the threshold calibrated on the separate unknown people. Vectors of every fold
are cached in ``bench/results/openset-cache/`` so scoring variants can be re-run
without retraining.

    python bench/openset_att.py                          # the defaults, seed 0, 3 folds
    python bench/openset_att.py --set val_fraction=0 --set patience=0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.train_att import DEFAULT_ROOT, RESULTS, apply_overrides  # noqa: E402
from pipelines.services.evaluation import (  # noqa: E402
    EmbeddedSet,
    Protocol,
    load_dataset,
    probe_rows_of,
    score_fold,
    split_people,
)
from siamese import openset  # noqa: E402
from siamese.data import encode_labels, load_faces  # noqa: E402
from siamese.distances import pairwise_distances  # noqa: E402
from siamese.training import embed, load_checkpoint, train  # noqa: E402

CACHE = RESULTS / "openset-cache"
_FACES: dict[Any, torch.Tensor] = {}


def fold_vectors(
    paths: list[str],
    names: list[str],
    train_people: list[str],
    overrides: list[str],
    seed: int,
    tta_shift: int = 0,
) -> tuple[np.ndarray, str, dict[str, Any]]:
    config, enc = apply_overrides([*overrides, f"seed={seed}"])
    spec = [config.to_dict(), enc.to_dict(), sorted(train_people)] + (
        [tta_shift] if tta_shift else []
    )
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    cached = CACHE / f"{key}.npz"
    if cached.exists():
        z = np.load(cached, allow_pickle=False)
        return z["vectors"], str(z["distance"]), json.loads(str(z["info"]))
    if enc not in _FACES:  # decode the data set once per input format, not per training
        _FACES[enc] = load_faces(paths, enc)
    images = _FACES[enc]
    keep = np.isin(np.asarray(names), train_people)
    labels, _ = encode_labels([n for n, k in zip(names, keep, strict=True) if k])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train(
            images[torch.from_numpy(keep)],
            np.asarray(labels),
            config,
            enc,
            checkpoint_path=Path(tmp) / "m.pt",
        )
        seconds = time.perf_counter() - t0
        ckpt = load_checkpoint(Path(tmp) / "m.pt")
    vectors = embed(ckpt.encoder, images)
    if tta_shift:
        # Also embed copies shifted by +-tta_shift pixels (edge-replicated) and sum.
        pad = torch.nn.functional.pad(images, (tta_shift,) * 4, mode="replicate")
        h, w = images.shape[-2:]
        t = tta_shift
        for dy, dx in ((0, -t), (0, t), (-t, 0), (t, 0)):
            crop = pad[:, :, t + dy : t + dy + h, t + dx : t + dx + w].contiguous()
            vectors = vectors + embed(ckpt.encoder, crop)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    info = {
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "val_eer": result.best_eer,
        "seconds": round(seconds, 1),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cached, vectors=vectors, distance=config.distance, info=json.dumps(info))
    return vectors, config.distance, info


def identity_distances(
    vectors: np.ndarray, names: np.ndarray, probes: list[int], gallery: list[int], distance: str
) -> tuple[np.ndarray, list[str]]:
    """[probes, identities] distance to each identity's nearest image in ``gallery``."""
    d = pairwise_distances(vectors[probes], vectors[gallery], distance).astype(np.float64)
    gal = names[gallery]
    ids = sorted(set(gal.tolist()))
    return np.stack([d[:, gal == g].min(axis=1) for g in ids], axis=1), ids


def score_variants(
    vectors: np.ndarray,
    names_list: list[str],
    split: Any,
    protocol: Protocol,
    fold: int,
    distance: str,
) -> dict[str, dict[str, float]]:
    """DIR@FPIR 1% and realised FPIR for several score normalisations of the same vectors."""
    names = np.asarray(names_list, dtype=object)
    gallery, mated, calib, test = probe_rows_of(names_list, split, protocol, fold)
    cohort = np.flatnonzero(np.isin(names, split.train)).tolist()
    sets = {"mated": mated, "calib": calib, "test": test}
    dist = {k: identity_distances(vectors, names, r, gallery, distance)[0] for k, r in sets.items()}
    ids = sorted(set(names[gallery].tolist()))  # the column order of identity_distances
    coh = {k: identity_distances(vectors, names, r, cohort, distance)[0] for k, r in sets.items()}
    # Z-norm statistics: each cohort image against each gallery identity.
    zc, _ = identity_distances(vectors, names, cohort, gallery, distance)
    z_mu, z_sd = zc.mean(axis=0), zc.std(axis=0) + 1e-9

    def rules(D: np.ndarray, C: np.ndarray) -> dict[str, np.ndarray]:
        t_mu, t_sd = C.mean(axis=1, keepdims=True), C.std(axis=1, keepdims=True) + 1e-9
        g_mu, g_sd = D.mean(axis=1, keepdims=True), D.std(axis=1, keepdims=True) + 1e-9
        srt = np.sort(D, axis=1)
        other = np.where(D <= srt[:, :1], srt[:, 1:2], srt[:, :1])
        tn = (D - t_mu) / t_sd
        zn = (D - z_mu) / z_sd
        return {
            "raw": D,
            "tnorm_gallery": (D - g_mu) / g_sd,
            "tnorm_cohort": tn,
            "znorm": zn,
            "snorm": 0.5 * (tn + zn),
            "ratio": D / np.maximum(other, 1e-9),
            "cohort_min_ratio": D / np.maximum(C.min(axis=1, keepdims=True), 1e-9),
        }

    scored = {k: rules(dist[k], coh[k]) for k in sets}
    truth = np.array([ids.index(n) for n in names[mated]])
    out = {}
    for rule in scored["mated"]:
        S = scored["mated"][rule]
        own = S[np.arange(S.shape[0]), truth]
        rank = 1 + (S < own[:, None]).sum(axis=1)
        calib_best = scored["calib"][rule].min(axis=1)
        test_best = scored["test"][rule].min(axis=1)
        thr = openset.threshold_at_fpir(protocol.target_fpir, calib_best)
        dirs = openset.dir_at_fpir((0.01, 0.1), own, rank, test_best)
        out[rule] = {
            "dir1": dirs[0.01],
            "dir10": dirs[0.1],
            "fpir": openset.fpir_at(thr, test_best) if np.isfinite(thr) else float("nan"),
            "fnir": openset.fnir_at(thr, own, rank) if np.isfinite(thr) else float("nan"),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--template", default="best")
    p.add_argument(
        "--ensemble",
        type=int,
        default=1,
        help="train N seeds per fold and concatenate their (unit) vectors",
    )
    p.add_argument("--tta", type=int, default=0, help="also embed +-N pixel shifts and sum")
    p.add_argument("--variants", action="store_true", help="also score normalisations")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    protocol = Protocol(
        data=str(args.data),
        folds=args.folds,
        seed=args.seed,
        template=args.template,
        multiple_faces="largest",  # whole AT&T images: one "face" each
    )
    paths, names = load_dataset(args.data)
    rows = []
    for fold in range(args.folds):
        split = split_people(names, protocol, fold)
        parts = [
            fold_vectors(
                paths, names, split.train, args.overrides, args.seed + fold + 1000 * e, args.tta
            )
            for e in range(args.ensemble)
        ]
        vectors, distance, info = parts[0]
        if args.ensemble > 1:
            stacked = np.concatenate([v for v, _, _ in parts], axis=1) / np.sqrt(args.ensemble)
            vectors = np.ascontiguousarray(stacked, dtype=np.float32)
        # The overrides keep the encoder's unit-length output unless they say otherwise.
        _, enc = apply_overrides(args.overrides)
        embedded = EmbeddedSet.one_per_row(vectors, distance, normalized=bool(enc.normalize))
        f = score_fold(embedded, names, paths, split, protocol, fold, None)
        row = {
            "fold": fold,
            "dir1": f.figures["dir@fpir=1%"],
            "dir10": f.figures["dir@fpir=10%"],
            "fpir": f.figures["fpir"],
            "fnir": f.figures["fnir"],
            "eer": f.figures["eer"],
            "rank1": f.figures["rank1"],
            **info,
        }
        if args.variants:
            var = score_variants(vectors, names, split, protocol, fold, distance)
            for rule, figs in var.items():
                row[f"{rule}.dir1"] = figs["dir1"]
                row[f"{rule}.fpir"] = figs["fpir"]
                row[f"{rule}.fnir"] = figs["fnir"]
        rows.append(row)
        print(
            json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
            flush=True,
        )
    keys = [k for k in rows[0] if k.endswith(("dir1", "fpir", "fnir")) or k in ("dir10", "eer")]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    print("MEAN", json.dumps({k: round(v, 4) for k, v in mean.items()}), args.overrides, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
