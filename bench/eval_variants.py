"""Scoring variants of one evaluation protocol on descriptors computed once (issue 20).

Detects every photo (cached), embeds every usable face once per model (zero-shot
``dlib-resnet`` with and without ``--flip-average``), then scores the evaluate protocol's folds
for each combination of template (best / mean), face choice for labelled photos
(``--multiple-faces``) and probe scoring (every face vs the largest face only, the behaviour
before issue 20), with the same services ``siamid evaluate`` runs.

    SIAMID_TORCH_THREADS=1 python bench/eval_variants.py \
        --data ../shared/datasets/celeba_wild --folds 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
from pipelines.services.runtime import process_runtime

from pipelines.services import evaluation as ev


def largest_only(e: ev.EmbeddedSet) -> ev.EmbeddedSet:
    """The same descriptors with only each photo's largest usable face (before issue 20)."""
    has = e.has_vector()
    first = np.zeros((e.rows, e.dim), np.float32)
    first[has] = e.face_vectors[e.face_start[:-1][has]]
    return ev.EmbeddedSet.one_per_row(first, e.distance, e.normalized, has)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--enroll", type=int, default=5)
    ap.add_argument("--flip", default="0,1", help="flip-average settings to embed with")
    ap.add_argument("--out", type=Path, default=None, help="JSON of every variant's figures")
    args = ap.parse_args()

    rt = process_runtime()
    base = ev.Protocol(data=str(args.data.resolve()), backbone="dlib-resnet", enroll=args.enroll)
    crop = ev.crop_of(rt, base)
    paths, names = ev.load_dataset(args.data)
    data = ev.detect_dataset(rt, paths, names)
    several = sum(len(f) > 1 for f in data.usable_faces())
    print(f"{len(paths)} photos, {several} with several usable faces", flush=True)
    results = []
    for flip in [bool(int(x)) for x in args.flip.split(",")]:
        proto = ev.Protocol(**{**base.__dict__, "flip_average": flip})
        split0 = ev.split_people(data.names, proto, 0)
        t0 = time.perf_counter()
        model = ev.train_fold_model(rt, data, split0.train, 0, proto, crop).name
        embedded = ev.embed_dataset(rt, model, data)
        print(
            f"flip={flip}: embedded {len(embedded.face_vectors)} faces in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        for template, multiple, probes in itertools.product(
            ("best", "mean"), ("largest", "consistent"), ("largest", "every")
        ):
            p = ev.Protocol(
                **{
                    **proto.__dict__,
                    "template": template,
                    "multiple_faces": multiple,
                    "folds": args.folds,
                }
            )
            e = embedded if probes == "every" else largest_only(embedded)
            folds = [
                ev.score_fold(
                    e, data.names, data.paths, ev.split_people(data.names, p, f), p, f, model
                )
                for f in range(args.folds)
            ]
            m = ev.summarise(folds, p)
            row = {
                "flip": flip,
                "template": template,
                "multiple_faces": multiple,
                "probes": probes,
                "rank1": m["rank1"],
                "dir@0.1%": m["dir_at_fpir"]["0.001"],
                "dir@1%": m["dir_at_fpir"]["0.01"],
                "dir@10%": m["dir_at_fpir"]["0.1"],
                "eer": m["eer"],
                "fpir": m["realised_fpir"],
                "fpir_std": m["std"]["realised_fpir"],
                "dir1_folds": [round(f.figures["dir@fpir=1%"], 3) for f in folds],
                "fpir_folds": [round(f.figures["fpir"], 4) for f in folds],
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
