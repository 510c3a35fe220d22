"""An ensemble of independently trained encoders that embeds as one.

Each member is a complete :class:`~siamese.encoder.Encoder` trained on its own seed (its own
initial weights, batches, pairs and augmentation; see ``TrainConfig.members``). The ensemble's
embedding is the concatenation of the members' embeddings scaled by ``1 / sqrt(members)``, so

* with unit-norm members the result is unit norm too, and its L2 distance is the root mean
  square of the members' L2 distances (its cosine distance their mean): the margin, the
  default threshold (``margin / 2``) and the distance range mean what they mean for one member;
* an index, a vector store or a template mean need nothing special: it is one vector per image.

Members that disagree about a pair average out, which matters most in the tail that open-set
identification lives in (the nearest impostor among many): on AT&T, 3 members raised DIR at
FPIR 1% by 0.03-0.04 over 6 and 10 folds (BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from siamese.encoder import Encoder

#: Format tag of a checkpoint holding several members (see ``siamese.training``).
ENSEMBLE_CHECKPOINT_FORMAT = "siamid.siamese.ensemble.v1"


class EnsembleEncoder(nn.Module):
    """Members' embeddings side by side, scaled by ``1 / sqrt(len(members))``.

    Args:
        members: encoders of one architecture and input shape (at least one).
    """

    def __init__(self, members: Sequence[Encoder]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member encoder")
        shapes = {m.input_shape for m in members}
        if len(shapes) != 1:
            raise ValueError(f"ensemble members must take the same input; got {sorted(shapes)}")
        self.members = nn.ModuleList(members)
        self.config = members[0].config
        self._scale = 1.0 / math.sqrt(len(members))

    @property
    def embedding_dim(self) -> int:
        return sum(int(m.embedding_dim) for m in self.members)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.members[0].input_shape

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([m(x) for m in self.members], dim=1) * self._scale
