"""The face encoder: a small CNN mapping a face crop to an embedding vector."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siamese.config import EncoderConfig

logger = logging.getLogger(__name__)


def _activation(name: str) -> nn.Module:
    return nn.ReLU(inplace=True) if name == "relu" else nn.Tanh()


def _default_trunk(cfg: EncoderConfig, in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for width in cfg.widths:
        for _ in range(cfg.convs_per_stage):
            # No conv bias under batch norm: the norm's shift makes it redundant.
            layers.append(
                nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=not cfg.batch_norm)
            )
            if cfg.batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(_activation(cfg.activation))
            channels = width
        layers.append(nn.MaxPool2d(2))
    if cfg.pooling == "avg":
        layers.append(nn.AdaptiveAvgPool2d(1))
    return nn.Sequential(*layers)


def _chopra_trunk(cfg: EncoderConfig, in_channels: int) -> nn.Sequential:
    c1, c3, c5 = cfg.widths

    def norm(width: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(width)] if cfg.batch_norm else []

    # Chopra et al. 2005, Sec. 4: C1 7x7, S2 2x2, C3 6x6, S4 4x3, C5 5x5. The
    # subsampling layers of the paper average their inputs, hence average pooling.
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, kernel_size=7),
        *norm(c1),
        _activation(cfg.activation),
        nn.AvgPool2d(kernel_size=2),
        nn.Conv2d(c1, c3, kernel_size=6),
        *norm(c3),
        _activation(cfg.activation),
        nn.AvgPool2d(kernel_size=(4, 3)),
        nn.Conv2d(c3, c5, kernel_size=5),
        *norm(c5),
        _activation(cfg.activation),
    )


class Encoder(nn.Module):
    """CNN encoder configured by :class:`~siamese.config.EncoderConfig`.

    ``forward``: ``[B, C, H, W]`` float images (preprocessed, see
    :func:`siamese.data.preprocess`) -> ``[B, embedding_dim]`` embeddings, unit-norm
    when ``config.normalize``.

    Args:
        config: the architecture.
        in_channels: override of ``config.in_channels`` for the trunk, used by the
            two-channel network which stacks two images.
    """

    def __init__(self, config: EncoderConfig, *, in_channels: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.in_channels = config.in_channels if in_channels is None else in_channels
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1; got {self.in_channels}")
        if config.preset == "chopra2005":
            self.trunk = _chopra_trunk(config, self.in_channels)
        else:
            self.trunk = _default_trunk(config, self.in_channels)
        self.feature_dim = self._probe_feature_dim()
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.feature_dim, config.embedding_dim)
        self.embedding_norm: nn.Module = (
            nn.BatchNorm1d(config.embedding_dim) if config.embedding_bn else nn.Identity()
        )

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` expected by ``forward``."""
        h, w = self.config.input_size
        return (self.in_channels, h, w)

    def _probe_feature_dim(self) -> int:
        # A dry run sizes the linear head for any input size; it draws no random
        # numbers, so it does not disturb seeded initialisation.
        c, h, w = self.input_shape
        was_training = self.trunk.training
        self.trunk.eval()
        try:
            with torch.no_grad():
                out = self.trunk(torch.zeros(1, c, h, w))
        except RuntimeError as exc:
            raise ValueError(
                f"input_size {self.config.input_size} is too small for the {self.config.preset} "
                f"encoder: {exc}"
            ) from exc
        finally:
            self.trunk.train(was_training)
        if out.numel() == 0:
            raise ValueError(
                f"input_size {self.config.input_size} is too small for the "
                f"{self.config.preset} encoder"
            )
        return int(out[0].numel())

    def _embed_unnormalized(self, x: Tensor) -> Tensor:
        return self.embedding_norm(self.head(self.dropout(self.trunk(x).flatten(1))))

    def forward(self, x: Tensor) -> Tensor:
        c, h, w = self.input_shape
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise ValueError(
                f"Encoder expects images of shape [B, {c}, {h}, {w}]; got {tuple(x.shape)}"
            )
        z = self._embed_unnormalized(x)
        if self.config.flip_tta and not self.training:
            z = z + self._embed_unnormalized(x.flip(dims=[3]))
        if self.config.normalize:
            z = F.normalize(z, p=2.0, dim=1)
        return z
