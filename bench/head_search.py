"""Search tool for adapting dlib-resnet (issue 12): does training on some people help others?

The frozen network's descriptors of a data set's aligned faces (and, for ``mode=last-stages``
variants, the frozen trunk's activations) are computed once and cached in
``bench/results/head-cache-*.npz`` / ``trunk-cache-*.npy``; then, per seed, the people are split
in two halves (identity-disjoint), each ``--variant`` (fields of ``siamese.pretrained.TuneConfig``)
is trained on one half, and the other half is scored: verification EER and TAR at FAR 0.1%,
next to the untouched network's (zero-shot).

    python bench/head_search.py --data ../shared/datasets/celeba_wild --seeds 3 \\
        --variant lr=1e-4 --variant epochs=5 --variant margin=0.8,hard_pool_factor=1e9 \\
        --variant mode=last-stages,epochs=5
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import open_bench_runtime, set_threads  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def descriptors(data: Path, home: Path) -> tuple[np.ndarray, np.ndarray]:
    from pipelines.services import eval_steps, evaluation
    from pipelines.services.crops import CropSpec
    from pipelines.services.pretrained import _descriptors

    key = hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:12]
    cache = RESULTS / f"head-cache-{key}.npz"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        return z["d"], z["names"]
    rt = open_bench_runtime(home)
    paths, names = evaluation.load_dataset(data)
    found = eval_steps.detect_dataset(rt, paths, names)
    d = _descriptors(rt, found.paths, found.faces, CropSpec.dlib_chips())
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.savez(cache, d=d, names=np.asarray(found.names))
    return d, np.asarray(found.names)


def trunk_activations(data: Path, home: Path, names: np.ndarray) -> np.ndarray:
    """The frozen trunk's activations of the same faces as :func:`descriptors`, float16."""
    from pipelines.services import eval_steps, evaluation
    from pipelines.services.crops import CropSpec
    from pipelines.services.pretrained import trunk_activations as activations

    key = hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:12]
    cache = RESULTS / f"trunk-cache-{key}.npy"
    if cache.is_file():
        return np.load(cache)
    rt = open_bench_runtime(home)
    paths, all_names = evaluation.load_dataset(data)
    found = eval_steps.detect_dataset(rt, paths, all_names)
    if list(found.names) != list(names):
        raise SystemExit(f"{cache}: the faces differ from the descriptor cache; delete both")
    h = activations(rt, found.paths, found.faces, CropSpec.dlib_chips()).astype(np.float16)
    np.save(cache, h)
    return h


def score(x: np.ndarray, names: np.ndarray) -> dict[str, float]:
    from pipelines.services.scoring import verification_pairs
    from siamese.metrics import eer
    from siamese.openset import tar_at_far

    genuine, impostor = verification_pairs(x, names, "l2")
    return {"eer": eer(genuine, impostor)[0], "tar@far=0.1%": tar_at_far(genuine, impostor, 1e-3)}


def parse_variant(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        k, v = part.split("=", 1)
        for parse in (int, float, json.loads):
            try:
                out[k] = parse(v)
                break
            except ValueError:
                continue
        else:
            out[k] = v  # a word: mode=last-stages
    return out


def main(argv: list[str] | None = None) -> None:
    from pipelines.services.model_files import FACE_RESNET, model_file
    from pipelines.services.pretrained import top_descriptors
    from siamese.dlib_resnet import load_dlib_resnet
    from siamese.pretrained import TuneConfig, train_head, train_stages

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--home", type=Path, default=None, help="SIAMID_HOME with a detection cache")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--variant", action="append", default=[], help="k=v,k=v of TuneConfig")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    set_threads(args.threads)
    variants = [("zero-shot", None), ("default", {})]
    variants += [(v, parse_variant(v)) for v in args.variant]
    with tempfile.TemporaryDirectory() as tmp:
        d, names = descriptors(args.data, args.home or Path(tmp))
        stages = any((c or {}).get("mode") == "last-stages" for _, c in variants)
        h = trunk_activations(args.data, args.home or Path(tmp), names) if stages else None
    pretrained = load_dlib_resnet(model_file(FACE_RESNET)) if stages else None
    people = np.unique(names)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name, _ in variants}
    for seed in range(args.seeds):
        order = np.random.default_rng(seed).permutation(people)
        train_people = set(order[: len(order) // 2])
        tr = np.asarray([n in train_people for n in names])
        for name, changes in variants:
            x = d[~tr]
            if changes is not None:
                config = replace(TuneConfig(seed=seed), **changes)
                labels = np.unique(names[tr], return_inverse=True)[1]
                if config.mode == "last-stages":
                    assert h is not None and pretrained is not None
                    body = copy.deepcopy(pretrained)  # train_stages changes it in place
                    top = train_stages(body, h[tr].astype(np.float32), labels, config).module
                    x = top_descriptors(top, h[~tr].astype(np.float32))
                else:
                    head = train_head(d[tr], labels, config).module
                    with torch.no_grad():
                        x = head(torch.as_tensor(d[~tr])).numpy()
            rows[name].append(score(x, names[~tr]))
    print(f"{len(names)} faces of {len(people)} people; {args.seeds} seeds; test = other half")
    print("| variant | EER | TAR @ FAR 0.1% |")
    print("| --- | --- | --- |")
    for name, r in rows.items():
        eers = [x["eer"] for x in r]
        tars = [x["tar@far=0.1%"] for x in r]
        print(
            f"| {name} | {100 * np.mean(eers):.2f}% ± {100 * np.std(eers):.2f} | "
            f"{np.mean(tars):.3f} |"
        )


if __name__ == "__main__":
    main()
