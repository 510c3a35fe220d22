"""What a training run reports: the one shape both training paths (a Siamese encoder trained
from scratch, dlib's pretrained network adapted or as it is) return and the registry stores as
``metrics["validation"]``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Validation:
    """Figures on the identity-disjoint validation people, and how the run went.

    ``eer``/``threshold`` are None when nobody was held out (a network registered as it is on
    too few people). ``zero_shot_eer``: the pretrained network's EER on the same people before
    training (pretrained only). ``device``: where the run computed (``cpu``, ``cuda``).
    """

    eer: float | None
    threshold: float | None
    genuine_quantiles: dict[str, float] | None = None
    impostor_quantiles: dict[str, float] | None = None
    best_epoch: int = 0
    epochs_run: int = 0
    stopped_early: bool = False
    train_identities: list[str] = field(default_factory=list)
    val_identities: list[str] = field(default_factory=list)
    images: int = 0
    members: int = 1
    member_eers: list[float] | None = None
    seconds: float = 0.0
    torch_threads: int = 1
    device: str = "cpu"
    zero_shot_eer: float | None = None
    backbone: str | None = None
    mode: str | None = None
    flip_average: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
