"""Training-time augmentation on image tensors: shift, rotation, zoom, flip, brightness,
contrast and random erasing.

With 20 to 40 training identities a Siamese encoder memorises faces quickly;
small geometric and photometric jitter is the cheapest regulariser. It runs on
already-preprocessed ``[B, C, H, W]`` tensors (on any device), one random draw per
image, from an explicit ``torch.Generator`` that is itself seeded from the
training's ``numpy.random.Generator`` (:func:`torch_generator`), so runs are
reproducible without touching global RNG state.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from siamese.config import AugmentConfig

logger = logging.getLogger(__name__)

__all__ = ["AugmentConfig", "augment", "torch_generator"]


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by one draw from ``rng``."""
    return torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))


def _uniform(n: int, generator: torch.Generator) -> Tensor:
    """``n`` draws from U(-1, 1), float32 on the CPU."""
    return torch.rand(n, generator=generator) * 2.0 - 1.0


def augment(images: Tensor, config: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Randomly jitter every image of a batch independently.

    Args:
        images: ``[B, C, H, W]`` float images (normalised as by
            :func:`siamese.data.preprocess`).
        config: the jitter ranges.
        generator: CPU generator that supplies every random draw.

    Returns:
        A new ``[B, C, H, W]`` tensor on ``images``' device (``images`` itself when
        augmentation is disabled).
    """
    if images.ndim != 4:
        raise ValueError(f"augment expects [B, C, H, W] images; got shape {tuple(images.shape)}")
    if not config.enabled or images.shape[0] == 0:
        return images
    b, _, h, w = images.shape
    device = images.device
    # Draw every number, used or not, in a fixed order: the stream (and so the rest
    # of the run) does not depend on which jitters are switched on.
    angle = _uniform(b, generator) * math.radians(config.max_rotation)
    scale = 1.0 + _uniform(b, generator) * config.max_scale
    # affine_grid coordinates span [-1, 1], i.e. 2 units per image side.
    tx = _uniform(b, generator) * (2.0 * config.max_shift)
    ty = _uniform(b, generator) * (2.0 * config.max_shift)
    flip = torch.rand(b, generator=generator) < config.hflip_prob
    brightness = _uniform(b, generator) * config.brightness
    contrast = 1.0 + _uniform(b, generator) * config.contrast
    erase = torch.rand(b, generator=generator) < config.erase_prob
    erase_area = (0.02 + torch.rand(b, generator=generator) * (1.0 - 0.02)) * config.erase_area
    erase_log_aspect = _uniform(b, generator) * math.log(3.0)
    erase_cy, erase_cx = torch.rand(b, generator=generator), torch.rand(b, generator=generator)

    out = images
    geometric = config.max_rotation > 0 or config.max_scale > 0 or config.max_shift > 0
    if geometric:
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        fx = torch.where(flip, -1.0, 1.0)
        # theta maps output to input coordinates in normalised units. Rotation is
        # done in pixel space (D^-1 R D with D = diag(W, H)) so non-square faces are
        # not sheared; the flip negates the x input coordinate.
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = cos * fx
        theta[:, 0, 1] = -sin * (h / w) * fx
        theta[:, 0, 2] = tx
        theta[:, 1, 0] = sin * (w / h)
        theta[:, 1, 1] = cos
        theta[:, 1, 2] = ty
        theta = theta.to(device=device, dtype=images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        # "border" repeats edge pixels: a black frame would be a cue unrelated to identity.
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
    elif bool(flip.any()):
        out = torch.where(flip.to(device).view(b, 1, 1, 1), out.flip(dims=[3]), out)

    if config.brightness > 0 or config.contrast > 0:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        c = contrast.to(device=device, dtype=out.dtype).view(b, 1, 1, 1)
        br = brightness.to(device=device, dtype=out.dtype).view(b, 1, 1, 1)
        out = (out - mean) * c + mean + br

    if config.erase_prob > 0 and bool(erase.any()):
        # Rectangle of the drawn area and aspect ratio (in [1/3, 3]), centred at a
        # random point and clipped to the image; filled with 0, the normalised grey.
        aspect = torch.exp(erase_log_aspect)
        eh = torch.sqrt(erase_area * aspect) * h
        ew = torch.sqrt(erase_area / aspect) * w
        cy, cx = erase_cy * h, erase_cx * w
        yy = torch.arange(h, dtype=torch.float32).view(1, h, 1)
        xx = torch.arange(w, dtype=torch.float32).view(1, 1, w)
        inside = (
            ((yy - cy.view(b, 1, 1)).abs() <= eh.view(b, 1, 1) / 2)
            & ((xx - cx.view(b, 1, 1)).abs() <= ew.view(b, 1, 1) / 2)
            & erase.view(b, 1, 1)
        )
        out = out.masked_fill(inside.unsqueeze(1).to(device), 0.0)
    return out
