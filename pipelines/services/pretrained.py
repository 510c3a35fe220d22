"""dlib's face ResNet as a model version: zero-shot, or adapted to the user's people.

``siamid train --backbone dlib-resnet --epochs N`` runs the frozen part of the network over the
training faces (dlib-style chips) once, then trains with the contrastive loss either a head on
the descriptors (``--tune head``, :func:`siamese.pretrained.train_head`) or the network's last
stages on the trunk's activations (``--tune last-stages``,
:func:`siamese.pretrained.train_stages`); ``--epochs 0`` registers the pretrained network as it
is. Either way the validation people (identity-disjoint) are scored zero-shot and after
training, so the figures say whether training helped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.services.crops import CropSpec
from pipelines.services.encoding import encode_files
from pipelines.services.errors import TrainingDataError
from pipelines.services.models import PRETRAINED_INPUT, LoadedEncoder, backbone_file, sha256_file
from pipelines.services.runtime import Runtime
from pipelines.services.validation import Validation
from siamese.config import TrainConfig

logger = logging.getLogger(__name__)


def _encode(
    rt: Runtime, module: Any, paths: list[str], faces: list[Any] | None, crop: CropSpec
) -> Any:
    """``module`` over every training image's chip, in order; a bad image stops training."""
    encoder = LoadedEncoder(module.eval(), PRETRAINED_INPUT)
    items = [(i, p, None) for i, p in enumerate(paths)]
    by_key = {i: f for i, f in enumerate(faces or []) if f is not None}
    enc = encode_files(encoder, items, rt.limits, spec=crop, faces=by_key, batch_size=32, workers=0)
    if enc.errors:
        key, error = next(iter(enc.errors.items()))
        raise TrainingDataError(
            f"{len(enc.errors)} images cannot train, e.g. {paths[key]}: {error}"
        )
    return enc.dense(len(paths))


def _descriptors(
    rt: Runtime,
    paths: list[str],
    faces: list[Any] | None,
    crop: CropSpec,
    flip_average: bool = False,
) -> Any:
    """The frozen network's descriptors of every training image (their chips; with
    ``flip_average``, averaged with their mirror images')."""
    from siamese.dlib_resnet import fold_for_inference, load_dlib_resnet
    from siamese.pretrained import DlibFaceEncoder

    body = fold_for_inference(load_dlib_resnet(backbone_file()))
    return _encode(rt, DlibFaceEncoder(body, flip_average=flip_average), paths, faces, crop)


def trunk_activations(
    rt: Runtime, paths: list[str], faces: list[Any] | None, crop: CropSpec, body: Any = None
) -> Any:
    """The frozen trunk's activations of every training image, flat (what the last stages see).

    ``body``: the unfolded network already loaded (it is not changed: a folded copy runs).
    """
    from siamese.dlib_resnet import fold_for_inference, load_dlib_resnet
    from siamese.pretrained import DlibTrunk

    folded = fold_for_inference(body if body is not None else load_dlib_resnet(backbone_file()))
    return _encode(rt, DlibTrunk(folded), paths, faces, crop)


def top_descriptors(top: Any, h: np.ndarray, batch: int = 256) -> np.ndarray:
    """Descriptors from trunk activations through a (fine-tuned) top, in batches, on the CPU."""
    import torch

    top.eval()
    with torch.no_grad():
        out = [top(torch.as_tensor(h[i : i + batch])).numpy() for i in range(0, len(h), batch)]
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def _validation(vectors: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    from pipelines.services.scoring import verification_pairs
    from siamese.metrics import verification_report

    genuine, impostor = verification_pairs(vectors, labels, "l2")
    report = verification_report(genuine, impostor)
    return {
        "eer": report.eer,
        "threshold": report.threshold,
        "genuine_quantiles": report.genuine_quantiles,
        "impostor_quantiles": report.impostor_quantiles,
    }


def train_pretrained(
    rt: Runtime,
    ts: Any,  # pipelines.services.training.TrainingSet
    config: TrainConfig,
    crop: CropSpec,
    checkpoint: Path,
    *,
    epochs: int,
    mode: str,
    flip_average: bool = False,
) -> Validation:
    """Adapt the network in ``mode`` (``epochs`` > 0) or keep it as it is; write the checkpoint.

    ``flip_average``: descriptors average each chip's with its mirror image's, in training (the
    head learns on them) and in every embedding the checkpoint makes.

    Uses ``config``'s seed, validation share, margin and loss; returns the validation
    figures in the keys :func:`pipelines.services.training.run_training` gives, plus the
    zero-shot EER of the same validation people.
    """
    import time

    import torch

    from siamese.data import encode_labels
    from siamese.device import resolve_device
    from siamese.dlib_resnet import load_dlib_resnet
    from siamese.pretrained import (
        StagesTop,
        TuneConfig,
        save_checkpoint,
        train_head,
        train_stages,
    )
    from siamese.training import split_identities

    t0 = time.perf_counter()
    names = np.asarray(ts.names)
    labels, classes = encode_labels(ts.names)
    labels = np.asarray(labels)
    if epochs == 0 and not ts.paths:  # zero-shot needs no data: no validation figures
        labels = np.zeros(0, dtype=np.int64)
    # Zero-shot on fewer than 4 people: nothing to hold out, the network is registered as it is.
    val_fraction = config.val_fraction if np.unique(labels).size >= 4 else 0.0
    if epochs > 0 and val_fraction == 0.0 and config.val_fraction > 0:
        raise TrainingDataError(
            f"training on the pretrained network needs at least 4 people with 2 or more images "
            f"(got {np.unique(labels).size}); use --epochs 0 for the network as it is"
        )
    train_ids, val_ids = split_identities(labels, val_fraction, config.seed)
    train_rows = np.isin(labels, train_ids)
    val_rows = np.isin(labels, val_ids)
    tune = TuneConfig(
        mode=mode, epochs=epochs, loss=config.loss, margin=config.margin, seed=config.seed
    )

    def progress(epoch: int, loss: float) -> None:
        level = logging.INFO if epoch % 5 == 0 or epoch == epochs else logging.DEBUG
        logger.log(level, "%s epoch %3d/%d  loss %.4f", mode, epoch, epochs, loss)

    head: Any = None
    stages: StagesTop | None = None
    device = resolve_device("auto")
    if epochs > 0 and mode == "last-stages":
        body = load_dlib_resnet(backbone_file())  # read once: its folded copy runs the trunk
        h = trunk_activations(rt, ts.paths, ts.faces, crop, body)
        zero_val = top_descriptors(StagesTop(body), h[val_rows])
        trained = train_stages(body, h[train_rows], labels[train_rows], tune, progress, device)
        assert isinstance(trained.module, StagesTop)
        stages = trained.module
        after_val = top_descriptors(stages, h[val_rows])
    else:
        d = (
            _descriptors(rt, ts.paths, ts.faces, crop, flip_average)
            if ts.paths
            else np.zeros((0, 128), np.float32)
        )
        zero_val = after_val = d[val_rows]
        if epochs > 0:
            head = train_head(d[train_rows], labels[train_rows], tune, progress).module
            with torch.no_grad():
                after_val = head(torch.as_tensor(d[val_rows])).numpy()
    figures: dict[str, Any] = {"eer": None, "threshold": None}
    if val_rows.any():
        zero = _validation(zero_val, names[val_rows])
        figures = _validation(after_val, names[val_rows]) if epochs > 0 else dict(zero)
        figures["zero_shot_eer"] = zero["eer"]
    save_checkpoint(
        checkpoint,
        backbone_sha256=sha256_file(backbone_file()),
        head=head,
        stages=stages,
        flip_average=flip_average,
        meta={"tune": tune.to_dict(), "crop": crop.to_dict(), "flip_average": flip_average},
    )
    return Validation(
        **figures,
        best_epoch=epochs,
        epochs_run=epochs,
        train_identities=[classes[i] for i in train_ids],
        val_identities=[classes[i] for i in val_ids],
        images=len(ts.paths),
        seconds=round(time.perf_counter() - t0, 2),
        torch_threads=torch.get_num_threads(),
        device=device.type,
        backbone="dlib-resnet",
        mode=mode if epochs > 0 else "zero-shot",
        flip_average=flip_average,
    )
