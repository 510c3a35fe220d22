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

from pipelines.services import eval_outputs as outputs
from pipelines.services import eval_steps as steps
from pipelines.services import evaluation as ev
from pipelines.services.runtime import process_runtime


def largest_only(e: ev.EmbeddedSet) -> ev.EmbeddedSet:
    """The same descriptors with only each photo's largest usable face (before issue 20)."""
    has = e.has_vector()
    first = np.zeros((e.rows, e.dim), np.float32)
    first[has] = e.face_vectors[e.face_start[:-1][has]]
    return ev.EmbeddedSet.one_per_row(first, e.distance, e.normalized, has)


def growth(
    embedded: ev.EmbeddedSet, names: list[str], flip: bool, seeds: int
) -> list[dict[str, object]]:
    """Calibrate with a quarter of the enrolled people, enrol the rest (4x): realised FPIR of
    new non-mated searches with the calibrated threshold kept, and set again for the size.

    Per seed the people split into 160 to enrol (40 at calibration), and two halves of the
    rest: calibration searches and test searches; mean templates of 5 photos (the person's
    face), every face of a search photo searched, as ``siamid evaluate`` scores them. Three
    thresholds for the grown gallery: the calibrated one kept ("fixed"), set again by the
    per-comparison model (``threshold_for_gallery``, "adjusted"), and set again at publish time
    from the calibration's searches run against the grown gallery pooled with its enrolled
    faces against the other people (``threshold_for_searches``, "searched again")."""
    from pipelines.services.scoring import (
        false_match_tail,
        gallery_self_search,
        operating_threshold,
        threshold_for_gallery,
        threshold_for_searches,
    )
    from siamese.distances import pairwise_distances
    from siamese.openset import fpir_at

    names_arr = np.asarray(names, dtype=object)
    people = sorted(set(names))
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 20])
        order = [people[i] for i in rng.permutation(len(people))]
        gallery_people, rest = order[:160], order[160:]
        calib_people, test_people = rest[: len(rest) // 2], rest[len(rest) // 2 :]
        enrol_rows = []
        for p in gallery_people:
            rows = np.flatnonzero(names_arr == p)
            enrol_rows += rng.permutation(rows)[:5].tolist()
        enrolled = ev.person_faces(embedded, names_arr, enrol_rows, "consistent")
        templates, first = ev.mean_templates(
            enrolled.vectors, names_arr[enrolled.rows], normalize=False
        )
        who = names_arr[np.asarray(enrolled.rows)[first]]
        small = np.isin(who, gallery_people[:40])

        def per_identity_rows(rows: list[int], templates: np.ndarray = templates) -> np.ndarray:
            faces, owner = embedded.face_rows(rows)
            d = pairwise_distances(embedded.face_vectors[faces], templates, "l2")
            by_photo = np.full((len(rows), len(templates)), np.inf)
            np.minimum.at(by_photo, owner, d)
            return by_photo

        def per_identity(persons: list[str]) -> np.ndarray:
            return per_identity_rows(np.flatnonzero(np.isin(names_arr, persons)).tolist())

        calib, test = per_identity(calib_people), per_identity(test_people)
        # mated searches: the gallery people's photos not enrolled, against the grown gallery
        enrolled_set = set(enrol_rows)
        in_gallery = np.flatnonzero(np.isin(names_arr, gallery_people))
        mated_rows = [int(r) for r in in_gallery if r not in enrolled_set]
        mated = per_identity_rows(mated_rows)
        column = {p: j for j, p in enumerate(who)}
        own_col = np.asarray([column[p] for p in names_arr[mated_rows]])
        own_d = mated[np.arange(len(mated_rows)), own_col]
        first_ok = own_d <= mated.min(axis=1)

        threshold = operating_threshold(0.01, calib[:, small].min(axis=1))
        tail = false_match_tail(calib[:, small])
        adjusted = threshold_for_gallery(threshold, tail, int(small.sum()), len(templates))
        # at publish time: the calibration's searches again, and the gallery's own people
        own = np.asarray([column[p] for p in names_arr[enrolled.rows]])
        self_best = gallery_self_search(pairwise_distances(enrolled.vectors, templates, "l2"), own)
        searched = threshold_for_searches(0.01, calib.min(axis=1), self_best)
        row = {
            "flip": flip,
            "seed": seed,
            "identities": [int(small.sum()), len(templates)],
            "searches": [len(calib), len(test)],
            "threshold": threshold,
            "adjusted": adjusted,
            "fpir_small": fpir_at(threshold, test[:, small].min(axis=1)),
            "fpir_grown_fixed": fpir_at(threshold, test.min(axis=1)),
            "fpir_grown_adjusted": fpir_at(adjusted, test.min(axis=1)),
            "searched_again": searched,
            "fpir_grown_searched_again": fpir_at(searched, test.min(axis=1)),
            # DIR (rank 1, every face) of the grown gallery's mated searches at each threshold
            "dir_grown": [
                float(np.mean(first_ok & (own_d <= t))) for t in (threshold, adjusted, searched)
            ],
            # the calibration's own searches against the grown gallery (no new searchers)
            "calib_grown_fixed": fpir_at(threshold, calib.min(axis=1)),
            "calib_grown_adjusted": fpir_at(adjusted, calib.min(axis=1)),
        }
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--enroll", type=int, default=5)
    ap.add_argument("--flip", default="0,1", help="flip-average settings to embed with")
    ap.add_argument("--out", type=Path, default=None, help="JSON of every variant's figures")
    ap.add_argument("--cache", type=Path, default=None, help="folder to keep the descriptors in")
    ap.add_argument(
        "--growth", action="store_true", help="measure the threshold as the gallery grows 4x"
    )
    args = ap.parse_args()

    rt = process_runtime()
    base = ev.Protocol(data=str(args.data.resolve()), backbone="dlib-resnet", enroll=args.enroll)
    crop = steps.crop_of(rt, base)
    paths, names = ev.load_dataset(args.data)
    data = steps.detect_dataset(rt, paths, names)
    several = sum(len(f) > 1 for f in data.usable_faces())
    print(f"{len(paths)} photos, {several} with several usable faces", flush=True)
    results = []
    for flip in [bool(int(x)) for x in args.flip.split(",")]:
        proto = ev.Protocol(**{**base.__dict__, "flip_average": flip})
        split0 = ev.split_people(data.names, proto, 0)
        t0 = time.perf_counter()
        cached = args.cache / f"faces-flip{int(flip)}.npz" if args.cache else None
        if cached is not None and cached.is_file():
            z = np.load(cached)
            embedded = ev.EmbeddedSet(z["vectors"], z["start"], "l2", False)
            model = str(z["model"])
        else:
            model = steps.train_fold_model(rt, data, split0.train, 0, proto, crop).name
            embedded = steps.embed_dataset(rt, model, data)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.savez(
                    cached, vectors=embedded.face_vectors, start=embedded.face_start, model=model
                )
        print(
            f"flip={flip}: {len(embedded.face_vectors)} faces in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        if args.growth:
            results += growth(embedded, data.names, flip, args.folds)
            continue
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
            m = outputs.summarise(folds, p)
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
