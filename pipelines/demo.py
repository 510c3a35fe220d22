"""``siamid demo``: the whole chain on the embedded default, end to end.

synthetic gallery (or a given folder) -> import -> train -> embed -> calibrate -> identify ->
evaluate -> report. People are split three ways so that nothing is measured on data it was fitted
to: enrolled people (the gallery the encoder trains on and the index holds), visitors (not
enrolled: half calibrate the threshold, half probe as unknowns), and a separate evaluation set
for the identity-disjoint evaluation, which trains its own encoder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow

from pipelines.runtime import Runtime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPlan:
    gallery: list[tuple[Path, str]]
    enrolled_probes: list[tuple[Path, str]]  # held out of the gallery: the person is known
    visitors_calibration: Path
    visitors_probe: list[tuple[Path, str]]
    evaluation: Path
    source: str


def synthetic_plan(root: Path, seed: int, people: int = 40, per_person: int = 8) -> DemoPlan:
    """Seeded synthetic people in disjoint blocks: enrolled, visitors, evaluation set."""
    from siamese.synthetic import generate_gallery

    gallery = generate_gallery(
        root / "gallery", identities=people, per_identity=per_person, seed=seed
    )
    calib = generate_gallery(
        root / "visitors-calibration",
        identities=people // 2,
        per_identity=per_person,
        seed=seed,
        first_identity=10_000,
    )
    probes = generate_gallery(
        root / "visitors-probe",
        identities=people // 4,
        per_identity=2,
        seed=seed,
        first_identity=20_000,
    )
    generate_gallery(
        root / "evaluation",
        identities=people,
        per_identity=per_person,
        seed=seed,
        first_identity=30_000,
    )
    del calib
    enrolled, held_out = hold_out_one(gallery)
    return DemoPlan(
        enrolled, held_out, root / "visitors-calibration", probes, root / "evaluation", "synthetic"
    )


def hold_out_one(
    images: list[tuple[Path, str]],
) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """The last image of each person is kept out of the gallery to probe with."""
    last: dict[str, tuple[Path, str]] = {}
    for item in images:
        last[item[1]] = item
    held = set(last.values())
    return [it for it in images if it not in held], sorted(held, key=lambda t: t[1])


def folder_plan(data: Path, root: Path, seed: int) -> DemoPlan:
    """A real ImageFolder: 60% of people enrolled, 20% visitors for calibration, 20% probing.

    The calibration visitors are linked into a folder of their own, since calibration reads
    an ImageFolder of people who are not enrolled.
    """
    from pipelines.gallery import scan_image_folder

    items = [it for it in scan_image_folder(data) if it.precheck is None]
    people = sorted({str(it.identity) for it in items})
    order = [people[i] for i in np.random.default_rng(seed).permutation(len(people))]
    n_gal, n_cal = int(0.6 * len(order)), int(0.2 * len(order))
    enrolled, calib = set(order[:n_gal]), set(order[n_gal : n_gal + n_cal])
    cal_dir = root / "visitors-calibration"
    for it in items:
        if it.identity in calib:
            link = cal_dir / str(it.identity) / it.path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(it.path)
    gallery, held_out = hold_out_one(
        [(it.path, str(it.identity)) for it in items if it.identity in enrolled]
    )
    return DemoPlan(
        gallery=gallery,
        enrolled_probes=held_out,
        visitors_calibration=cal_dir,
        visitors_probe=[
            (it.path, str(it.identity))
            for it in items
            if it.identity not in enrolled and it.identity not in calib
        ],
        evaluation=data,
        source=str(data),
    )


def identify_summary(
    rt: Runtime, probes: list[tuple[Path, str]], enrolled: set[str]
) -> dict[str, Any]:
    """Identify enrolled and unknown probes; count right and wrong decisions."""
    from pipelines.identify import Identifier

    ident = Identifier(rt, top_k=3)
    decisions = ident.identify([p for p, _ in probes])
    right = wrong_person = false_reject = false_accept = true_reject = nearest_right = 0
    for d, (_, truth) in zip(decisions, probes, strict=True):
        if truth in enrolled and d.candidates and d.candidates[0].identity == truth:
            nearest_right += 1  # closed-set rank-1, whatever the threshold says
        if truth in enrolled:
            if d.decision == "match" and d.identity == truth:
                right += 1
            elif d.decision == "match":
                wrong_person += 1
            else:
                false_reject += 1
        elif d.decision == "match":
            false_accept += 1
        else:
            true_reject += 1
    return {
        "probes": len(probes),
        "enrolled_nearest_is_right": nearest_right,
        "enrolled_correct": right,
        "enrolled_wrong_person": wrong_person,
        "enrolled_rejected": false_reject,
        "unknown_rejected": true_reject,
        "unknown_accepted": false_accept,
        "threshold": ident.threshold,
        "threshold_source": ident.threshold_source,
    }


@flow(name="demo")
def demo_flow(
    home: str, data: str | None = None, seed: int = 0, epochs: int | None = None, folds: int = 1
) -> dict[str, Any]:
    """Run every step on the embedded default and return what each step reported."""
    from pipelines.embed import embed_flow
    from pipelines.evaluate import Protocol, evaluate_flow
    from pipelines.gallery import ImportItem, import_items
    from pipelines.identify import calibrate
    from pipelines.runtime import open_runtime
    from pipelines.settings import Settings
    from pipelines.train import train_flow

    rt = open_runtime(Settings())
    root = Path(home) / "demo"
    plan = folder_plan(Path(data), root, seed) if data else synthetic_plan(root, seed)
    print(
        f"[1/6] data: {plan.source}: {len(plan.gallery)} gallery images of "
        f"{len({n for _, n in plan.gallery})} people",
        flush=True,
    )

    imported = import_items(
        [ImportItem(p, n) for p, n in plan.gallery], sessions=rt.sessions, limits=rt.limits
    )
    print(f"[2/6] import: {imported.as_dict()}", flush=True)

    trained = train_flow(data=None, seed=seed, epochs=epochs)
    v = trained["validation"]
    print(
        f"[3/6] train: model {trained['model_version']}, validation EER "
        f"{100 * (v['eer'] or 0):.2f}% on {len(v['val_identities'])} unseen people",
        flush=True,
    )

    embedded = embed_flow(model=trained["model_version"])
    print(
        f"[4/6] embed: {embedded['embedded']} embedded, index version "
        f"{embedded['index_version']} ({embedded['factory']}, {embedded['vectors']} vectors)",
        flush=True,
    )

    calibrated = calibrate(rt, plan.visitors_calibration, 0.01)
    enrolled = {n for _, n in plan.gallery}
    probe_sample = _probe_sample(plan, seed)
    identified = identify_summary(rt, probe_sample, enrolled)
    print(
        f"[5/6] calibrate + identify: threshold {calibrated['threshold']:.4f} at FPIR 1% "
        f"(realised {calibrated['realised_fpir']:.3f}); {identified}",
        flush=True,
    )

    protocol = Protocol(
        data=str(plan.evaluation),
        folds=folds,
        seed=seed,
        epochs=epochs,
        enroll=4 if not data else 5,
    )
    report_dir = Path(home) / "reports" / "demo"
    evaluated = evaluate_flow(protocol, str(report_dir))
    m = evaluated["metrics"]
    print(
        f"[6/6] evaluate: rank-1 {m['rank1']:.3f}, DIR@FPIR=1% {m['dir_at_fpir']['0.01']:.3f}, "
        f"EER {100 * m['eer']:.2f}%, realised FPIR {m['realised_fpir']:.3f}",
        flush=True,
    )
    return {
        "import": imported.as_dict(),
        "train": {k: trained[k] for k in ("model_version", "validation")},
        "embed": embedded,
        "calibrate": calibrated,
        "identify": identified,
        "evaluate": {
            "report": evaluated["report"],
            **{
                k: m[k]
                for k in (
                    "rank1",
                    "dir_at_fpir",
                    "eer",
                    "threshold",
                    "realised_fpir",
                    "realised_fnir",
                )
            },
        },
    }


def _probe_sample(plan: DemoPlan, seed: int) -> list[tuple[Path, str]]:
    """Held-out images of up to 20 enrolled people plus every probing visitor."""
    rng = np.random.default_rng(seed)
    known = [
        plan.enrolled_probes[i] for i in sorted(rng.permutation(len(plan.enrolled_probes))[:20])
    ]
    return known + list(plan.visitors_probe)
