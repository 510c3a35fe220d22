"""Options that several commands take, declared once (``Annotated`` types for typer).

Choice lists come from the services and ``siamese.config`` (their one home); the enums here only
present them to typer. :func:`chosen` turns an optional choice back into the plain string the
services take.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from faces.methods import DETECTION_METHODS
from pipelines.cli.output import CliError
from pipelines.services.crops import FACE_MODES
from pipelines.services.detection import MULTIPLE_FACES
from pipelines.services.face_choice import MULTIPLE_FACES as LABELLED_MULTIPLE_FACES
from pipelines.services.scoring import CALIBRATE_ON, TEMPLATES
from siamese.config import ARCHS, BACKBONES, DISTANCES, LOSSES, TUNE_MODES


def _choices(name: str, values: tuple[str, ...] | list[str]) -> type[StrEnum]:
    return StrEnum(name, {v: v for v in values})  # type: ignore[return-value]


FacesChoice = _choices("FacesChoice", FACE_MODES)
MultipleChoice = _choices("MultipleChoice", MULTIPLE_FACES)
ArchChoice = _choices("ArchChoice", ARCHS)
LossChoice = _choices("LossChoice", LOSSES)
DistanceChoice = _choices("DistanceChoice", DISTANCES)
BackboneChoice = _choices("BackboneChoice", BACKBONES)
TuneChoice = _choices("TuneChoice", TUNE_MODES)
TemplateChoice = _choices("TemplateChoice", TEMPLATES)
LabelledMultipleChoice = _choices("LabelledMultipleChoice", LABELLED_MULTIPLE_FACES)
CalibrateOnChoice = _choices("CalibrateOnChoice", CALIBRATE_ON)
DetectorChoice = _choices("DetectorChoice", DETECTION_METHODS)


def chosen(choice: StrEnum | None) -> str | None:
    """The plain value of an optional choice (``None`` when the option was not given)."""
    return choice.value if choice is not None else None


def data_folder(data: Path, what: str = "person") -> Path:
    """``--data`` must be an ImageFolder; the one message when it is not."""
    if not data.is_dir():
        raise CliError(f"--data {data} is not a folder laid out as PATH/<{what}>/<image>")
    return data


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]


def optional_choice(choices: type[StrEnum], flag: str, help: str, **option: Any) -> Any:
    """The type of an option ``flag`` that takes one of ``choices`` and is ``None`` when not
    given (:func:`chosen` turns it back into the plain string)."""
    return Annotated[choices | None, typer.Option(flag, help=help, **option)]


def required_choice(choices: type[StrEnum], help: str) -> Any:
    """The type of an option that takes one of ``choices``; the command gives the default."""
    return Annotated[choices, typer.Option(help=help)]


def _use_detector(choice: StrEnum | None) -> StrEnum | None:
    """``--detector`` becomes this run's choice as it is parsed: ``SIAMID_DETECTOR``, which the
    detection service reads, here and in the Dask workers this process starts."""
    if choice is not None:
        os.environ["SIAMID_DETECTOR"] = choice.value
    return choice


DetectorOpt = optional_choice(
    DetectorChoice,
    "--detector",
    "Face detector: hog, cnn (dlib's CNN in torch) or hog+cnn (the CNN where HOG finds "
    "no face); default SIAMID_DETECTOR. Part of the detector's version: a change re-detects.",
    callback=_use_detector,
)

BACKBONE_HELP = (
    "small-cnn or chopra2005 (trained from scratch) or dlib-resnet (dlib's pretrained face "
    "ResNet in torch, a head trained with the contrastive loss; implies --faces detect)."
)
BackboneOpt = required_choice(BackboneChoice, BACKBONE_HELP)

FacesCheck = optional_choice(
    FacesChoice,
    "--faces",
    "The crop mode you expect (whole images or detected faces); refused when it "
    "differs from the model's. Default: the model's.",
)
FacesModeOpt = optional_choice(
    FacesChoice,
    "--faces",
    "whole: every image is already a face crop (synthetic, AT&T); detect: detect and align the "
    "face in each photo (photos without one are left out). Recorded with the model. Default: "
    "a given --model's mode, else the backbone's (detect for dlib-resnet, else whole).",
)
MembersOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Encoders trained on their own seeds and used side by side (default 3, the demo "
        "1; 1 trains and embeds 3x faster).",
    ),
]

DaskOpt = Annotated[
    str | None,
    typer.Option(
        "--dask",
        metavar="ADDRESS",
        help="Run the chunks on the workers of this Dask scheduler (tcp://HOST:8786).",
    ),
]
DaskWorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--dask-workers",
        min=1,
        metavar="N",
        help="Run the chunks on a local Dask cluster of N worker processes, 1 thread each.",
    ),
]
WaitOpt = Annotated[
    float,
    typer.Option(
        "--wait",
        min=0,
        metavar="SECONDS",
        help="Wait this long for another run on the same database to finish (0: exit at once).",
    ),
]
TuneOpt = optional_choice(
    TuneChoice,
    "--tune",
    "dlib-resnet with --epochs: train a head on its descriptors (default) or fine-tune "
    "its last stages at a low learning rate (last-stages).",
)
FlipOpt = Annotated[
    bool | None,
    typer.Option(
        "--flip-average/--no-flip-average",
        help="dlib-resnet: each face's descriptor averages its chip's and the mirrored chip's "
        "(twice the embedding time; lower EER on celeba_wild). Recorded with the model. "
        "Default: the backbone's (on for dlib-resnet, except --tune last-stages).",
        show_default=False,
    ),
]
TemplateOpt = optional_choice(
    TemplateChoice,
    "--template",
    "Score a known person by the nearest enrolled image (best) or the mean of them. "
    "Default: the model's (recorded with it; dlib-resnet: mean, else best).",
)
LabelledMultipleOpt = optional_choice(
    LabelledMultipleChoice,
    "--multiple-faces",
    "A labelled photo with several usable faces: the person's is the one that agrees "
    "with their other photos (consistent), the largest, or none (refuse). Recorded with "
    "the model. Default: the backbone's (consistent).",
)
GalleryMultipleOpt = required_choice(
    MultipleChoice,
    "A photo of several people: enrol the largest face (the others are recorded) or refuse "
    "the photo.",
)
CalibrateOnOpt = required_choice(
    CalibrateOnChoice,
    "Non-mated searches that set the threshold: the calibration unknowns, and by default "
    "also the people the encoder was trained on.",
)
EpochsOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Training epochs, at most (per fold in evaluate; dlib-resnet: of its --tune mode, "
        "default 0: the pretrained network as it is, zero-shot).",
    ),
]
TargetFpirOpt = Annotated[float, typer.Option(help="Target false-positive identification rate.")]
