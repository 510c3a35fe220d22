"""dlib's face-recognition ResNet as a torch module, loaded straight from dlib's ``.dat`` file.

The architecture is the ``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp``
(the network of ``dlib_face_recognition_resnet_model_v1.dat``): a 150x150 RGB chip goes
through ``con<32,7,7,2,2>``, ``affine``, ``relu``, ``max_pool<3,3,2,2>``, then residual
levels ``alevel4`` .. ``alevel0`` (3x32, 4x64, 3x128, 3x256, 1x256 channels; the first block
of levels 3..0 halves the resolution), ``avg_pool_everything`` and ``fc_no_bias<128>``. The
128-d output is the descriptor; ``loss_metric`` only trains it (it is not normalised).

Points of dlib's semantics this module reproduces (``dlib/dnn/layers.h`` and
``dlib/cuda/cpu_dlib.cpp``):

* ``con_``, ``max_pool_`` and ``avg_pool_`` pad by ``size/2`` when the stride is 1 and by 0
  otherwise; output sizes are ``1 + (in + 2*pad - size) // stride``. So the stride-2 convs
  of the down blocks are unpadded: 150 -> 72 -> 35 (pool) -> 17 -> 8 -> 3 -> 1 on the conv
  path.
* ``ares_down`` adds the block's output to ``avg_pool<2,2,2,2>`` of its input, not to a
  projection. ``add_prev_`` makes a tensor of the larger size in every dimension and adds
  the two with zero fill (``tt::add``): extra channels of the block get nothing from the
  skip path, and where the average pool is larger in space (4x4 against the block's 3x3 at
  256 channels, 2x2 against 1x1 in ``alevel0``) the extra rows and columns carry the pooled
  input alone. The descriptor then averages over those 2x2 positions.
* ``affine_`` is a frozen batch norm, ``y = x * gamma + beta`` per channel.
* ``input_rgb_image_sized`` (``dlib/dnn/input.h``) feeds ``(pixel - mean) / 256`` per RGB
  channel, with the means stored in the file (122.782, 117.001, 104.298).
* ``fc_`` stores its weights input-major; they are transposed into ``nn.Linear``.

:func:`load_dlib_resnet` returns a module whose affine layers are parameters (freeze them or
train them); :func:`fold_for_inference` returns a copy with each affine folded into the
convolution before it, in ``channels_last``, for fast embedding.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlibfile.format import (
    STRUCTURAL_PREFIXES,
    AffineLayer,
    ConvLayer,
    DlibFormatError,
    FcLayer,
    InputRgbLayer,
    MetricLoss,
    PoolLayer,
    read_dlib_network,
)

logger = logging.getLogger(__name__)

INPUT_SIZE = 150
EMBEDDING_DIM = 128
# input_rgb_image_sized's defaults (dlib/dnn/input.h); the loader takes the file's values.
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
# The decision threshold the network was trained with (loss_metric_2's dist_thresh).
DLIB_DISTANCE_THRESHOLD = 0.6

# (in_channels, out_channels, downsample) for each residual block, input first:
# alevel4 = 3 x ares<32>; alevel3 = ares_down<64> + 3 x ares<64>;
# alevel2 = ares_down<128> + 2 x ares<128>; alevel1 = ares_down<256> + 2 x ares<256>;
# alevel0 = ares_down<256>.
BLOCKS: tuple[tuple[int, int, bool], ...] = (
    *[(32, 32, False)] * 3,
    (32, 64, True),
    *[(64, 64, False)] * 3,
    (64, 128, True),
    *[(128, 128, False)] * 2,
    (128, 256, True),
    *[(256, 256, False)] * 2,
    (256, 256, True),
)

#: The first block of ``alevel1``: fine-tuning "the last stages" trains blocks from here on
#: (alevel1's 3 x 256 channels at 3x3, alevel0) and the fc; their input is 128 x 8 x 8.
LAST_STAGES_FROM = 10

_STEM_POOL = PoolLayer(kind="max", window=(3, 3), stride=(2, 2), padding=(0, 0))
_SKIP_POOL = PoolLayer(kind="avg", window=(2, 2), stride=(2, 2), padding=(0, 0))
_GLOBAL_POOL = PoolLayer(kind="avg", window=(0, 0), stride=(1, 1), padding=(0, 0))

# What a dlib layer's parameters go into: a module, the pooling geometry the file must
# state, or nothing (relu, add_prev, tags, skips).
LayerTarget = nn.Module | PoolLayer | None


class DlibAffine(nn.Module):
    """dlib's ``affine_`` in conv mode: a per-channel scale and shift, ``x * weight + bias``.

    Both are parameters, so a fine-tuning run may train them or freeze them
    (``requires_grad_(False)``); there are no batch statistics.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _dlib_padding(kernel: int, stride: int) -> int:
    # con_'s default padding (dlib/dnn/layers.h): kernel/2 at stride 1, else none.
    return kernel // 2 if stride == 1 else 0


def add_zero_padded(a: Tensor, b: Tensor) -> Tensor:
    """dlib's ``tt::add(dest, a, b)``: the sum over the larger shape, missing values read as 0.

    Both are (N, C, H, W) with the same N; each tensor sits at channel 0, row 0, column 0.
    """
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: Tensor) -> Tensor:
        # F.pad orders its amounts from the last dimension: (W, H, C).
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class DlibResidualBlock(nn.Module):
    """``ares<N>`` (``downsample=False``) or ``ares_down<N>`` from dnn_face_recognition_ex.cpp.

    ``relu(add_prev(block(x), skip(x)))`` with ``block = affine(con3x3(relu(affine(
    con3x3/stride(x)))))`` and ``skip`` the identity or ``avg_pool<2,2,2,2>``.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        if not downsample and in_channels != out_channels:
            raise ValueError(f"ares needs in == out channels, got {in_channels} -> {out_channels}")
        stride = 2 if downsample else 1
        self.downsample = downsample
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=_dlib_padding(3, stride)
        )
        self.affine1: nn.Module = DlibAffine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.affine2: nn.Module = DlibAffine(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H', W'), H' halved (dlib's rounding) when downsampling."""
        y = F.relu(self.affine1(self.conv1(x)))
        y = self.affine2(self.conv2(y))
        skip = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(add_zero_padded(y, skip))

    def dlib_layers(self) -> list[tuple[str, LayerTarget]]:
        """This block's dlib layers in forward order, with their torch targets."""
        layers: list[tuple[str, LayerTarget]] = [
            ("tag1", None),
            ("con", self.conv1),
            ("affine", self.affine1),
            ("relu", None),
            ("con", self.conv2),
            ("affine", self.affine2),
        ]
        if self.downsample:
            layers += [("tag2", None), ("skip1", None), ("avg_pool", _SKIP_POOL)]
        return [*layers, ("add_prev", None), ("relu", None)]


def _as_chips(chips: np.ndarray | Tensor) -> Tensor:
    """Validate uint8 RGB chips, (N, 150, 150, 3) or one (150, 150, 3), as a 4-d tensor."""
    images = chips if isinstance(chips, Tensor) else torch.as_tensor(np.asarray(chips))
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(
            f"expected uint8 RGB chips of shape (N, {INPUT_SIZE}, {INPUT_SIZE}, 3), got "
            f"{images.dtype} {tuple(images.shape)}; align faces with "
            "dlib.get_face_chip(img, shape, 150, 0.25) or an equivalent 150x150 crop"
        )
    return images


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet: (N, 3, 150, 150) normalised RGB -> (N, 128).

    Use :meth:`preprocess` (or :meth:`embed`, which also batches) to turn uint8 RGB chips
    aligned like ``dlib.get_face_chip(img, shape, 150, 0.25)`` into the network's input.
    Descriptors of the same person lie within :attr:`distance_threshold` (Euclidean).
    """

    mean_rgb: Tensor

    def __init__(
        self,
        mean_rgb: tuple[float, float, float] = DLIB_MEAN_RGB,
        distance_threshold: float = DLIB_DISTANCE_THRESHOLD,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, stride=2, padding=_dlib_padding(7, 2))
        self.affine: nn.Module = DlibAffine(32)
        self.blocks = nn.ModuleList(DlibResidualBlock(i, o, d) for i, o, d in BLOCKS)
        self.fc = nn.Linear(BLOCKS[-1][1], EMBEDDING_DIM, bias=False)
        self.register_buffer("mean_rgb", torch.tensor(mean_rgb, dtype=torch.float32))
        self.distance_threshold = float(distance_threshold)
        # Set by fold_for_inference: inputs are then made channels_last too.
        self.channels_last = False

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, 150, 150) float, already ``(pixel - mean) / 256`` -> (N, 128) descriptors."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"expected input of shape (N, 3, {INPUT_SIZE}, {INPUT_SIZE}), got "
                f"{tuple(x.shape)}; use preprocess() on (N, 150, 150, 3) uint8 RGB chips"
            )
        return self.top(self.trunk(x, len(self.blocks)), len(self.blocks))

    def trunk(self, x: Tensor, until: int) -> Tensor:
        """The stem and blocks ``[0, until)``: normalised input -> (N, C, H, W) activations."""
        x = F.relu(self.affine(self.conv(x)))
        x = F.max_pool2d(x, 3, 2)
        for block in self.blocks[:until]:
            x = block(x)
        return x

    def top(self, x: Tensor, start: int) -> Tensor:
        """Blocks ``[start, end)``, the average over space and the fc -> (N, 128)."""
        for block in self.blocks[start:]:
            x = block(x)
        return self.fc(x.mean(dim=(2, 3)))

    def preprocess(self, chips: np.ndarray | Tensor) -> Tensor:
        """(N, 150, 150, 3) or (150, 150, 3) uint8 RGB -> (N, 3, 150, 150) float32 input.

        As ``input_rgb_image_sized::to_tensor``: ``(pixel - mean[channel]) / 256``. The
        result is on the chips' device.
        """
        images = _as_chips(chips)
        mean = self.mean_rgb.to(images.device)
        x = (images.to(torch.float32) - mean) / 256.0
        # The NHWC -> NCHW view already has channels_last strides.
        x = x.permute(0, 3, 1, 2)
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    def embed(self, chips: np.ndarray | Tensor, batch_size: int = 32) -> np.ndarray:
        """uint8 RGB chips (N, 150, 150, 3) -> (N, 128) float32 descriptors, in batches.

        Runs under ``torch.inference_mode`` on the model's device; only one batch at a time
        is converted to float.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        images = _as_chips(chips)
        device = self.mean_rgb.device
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, images.shape[0], batch_size):
                batch = self.preprocess(images[start : start + batch_size].to(device))
                out.append(self(batch).float().cpu().numpy())
        if not out:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        return np.concatenate(out)

    def dlib_layers(self) -> list[tuple[str, LayerTarget]]:
        """Every layer of dlib's ``anet_type`` between input and loss, in forward order."""
        layers: list[tuple[str, LayerTarget]] = [
            ("con", self.conv),
            ("affine", self.affine),
            ("relu", None),
            ("max_pool", _STEM_POOL),
        ]
        for block in self.blocks:
            assert isinstance(block, DlibResidualBlock)
            layers += block.dlib_layers()
        return [*layers, ("avg_pool", _GLOBAL_POOL), ("fc", self.fc)]

    def conv_affine_pairs(self) -> list[tuple[nn.Conv2d, nn.Module, str]]:
        """(conv, owner, attribute) for each affine that directly follows a convolution."""
        pairs: list[tuple[nn.Conv2d, nn.Module, str]] = [(self.conv, self, "affine")]
        for block in self.blocks:
            assert isinstance(block, DlibResidualBlock)
            pairs += [(block.conv1, block, "affine1"), (block.conv2, block, "affine2")]
        return pairs


def dlib_layer_tokens() -> list[str]:
    """The face ResNet's dlib layers, input first (what :func:`read_dlib_network` checks)."""
    return [token for token, _ in DlibFaceResNet().dlib_layers()]


def _layer_error(path: Path, number: int, problem: str) -> DlibFormatError:
    return DlibFormatError(
        f"{path}: layer<{number}> (dlib's numbering, 0 = loss) {problem}; "
        "the file does not hold dlib's face-recognition ResNet "
        "(dlib_face_recognition_resnet_model_v1.dat)"
    )


def _load_conv(conv: nn.Conv2d, layer: ConvLayer, path: Path, number: int) -> None:
    expected = (
        conv.out_channels,
        conv.in_channels,
        tuple(conv.kernel_size),
        tuple(conv.stride),
        tuple(conv.padding),
    )
    found = (layer.num_filters, layer.in_channels, layer.kernel, layer.stride, layer.padding)
    if found != expected:
        raise _layer_error(
            path,
            number,
            f"is a convolution (filters, in, kernel, stride, padding) = {found}, expected "
            f"{expected}",
        )
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(layer.weight))
        assert conv.bias is not None
        if layer.bias is None:
            conv.bias.zero_()
        else:
            conv.bias.copy_(torch.from_numpy(layer.bias))


def _load_affine(affine: DlibAffine, layer: AffineLayer, path: Path, number: int) -> None:
    channels = affine.weight.shape[0]
    if not layer.conv_mode or layer.gamma.shape != (channels,):
        raise _layer_error(
            path,
            number,
            f"is an affine of {layer.gamma.size} values (conv mode {layer.conv_mode}), "
            f"expected a per-channel affine over {channels} channels",
        )
    with torch.no_grad():
        affine.weight.copy_(torch.from_numpy(layer.gamma))
        affine.bias.copy_(torch.from_numpy(layer.beta))


def _load_fc(fc: nn.Linear, layer: FcLayer, path: Path, number: int) -> None:
    if (layer.num_inputs, layer.num_outputs) != (fc.in_features, fc.out_features):
        raise _layer_error(
            path,
            number,
            f"is fc {layer.num_inputs} -> {layer.num_outputs}, expected "
            f"{fc.in_features} -> {fc.out_features}",
        )
    if layer.bias is not None and np.any(layer.bias != 0):
        raise _layer_error(path, number, "is an fc layer with a bias, expected fc_no_bias")
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(layer.weight.T)))


def load_dlib_resnet(path: str | Path) -> DlibFaceResNet:
    """Build :class:`DlibFaceResNet` from dlib's ``dlib_face_recognition_resnet_model_v1.dat``.

    Reads dlib's serialization directly (no dlib import) and checks every layer against
    ``dnn_face_recognition_ex.cpp``'s network. Raises :class:`DlibFormatError`, naming the
    file, when it is missing, truncated or holds another network. The model is returned in
    eval mode on the CPU with its affine layers as trainable parameters.
    """
    path = Path(path)
    model = DlibFaceResNet()
    slots = model.dlib_layers()
    net = read_dlib_network(path, [token for token, _ in slots])
    if not isinstance(net.loss, MetricLoss) or not isinstance(net.input, InputRgbLayer):
        raise DlibFormatError(
            f"{path}: holds a {type(net.loss).__name__} network on {type(net.input).__name__}, "
            "not dlib's face-recognition ResNet (loss_metric on 150x150 chips); use "
            "dlib_face_recognition_resnet_model_v1.dat"
        )
    if (net.input.rows, net.input.cols) != (INPUT_SIZE, INPUT_SIZE):
        raise DlibFormatError(
            f"{path}: the input layer takes {net.input.rows}x{net.input.cols} images, the "
            f"face ResNet takes {INPUT_SIZE}x{INPUT_SIZE}"
        )
    targets = [(token, t) for token, t in slots if not token.startswith(STRUCTURAL_PREFIXES)]
    assert len(targets) == len(net.layers), "read_dlib_network checked every token"
    for (token, target), layer, number in zip(targets, net.layers, net.numbers, strict=True):
        if token == "con":
            assert isinstance(target, nn.Conv2d) and isinstance(layer, ConvLayer)
            _load_conv(target, layer, path, number)
        elif token == "affine":
            assert isinstance(target, DlibAffine) and isinstance(layer, AffineLayer)
            _load_affine(target, layer, path, number)
        elif token == "fc":
            assert isinstance(target, nn.Linear) and isinstance(layer, FcLayer)
            _load_fc(target, layer, path, number)
        elif isinstance(target, PoolLayer) and layer != target:
            raise _layer_error(path, number, f"is {layer}, expected {target}")
    with torch.no_grad():
        model.mean_rgb.copy_(torch.tensor(net.input.mean_rgb, dtype=torch.float32))
    model.distance_threshold = net.loss.distance_threshold
    logger.info(
        "loaded dlib face ResNet from %s (%d parameters, mean RGB %s, threshold %.3g)",
        path,
        sum(p.numel() for p in model.parameters()),
        tuple(round(m, 3) for m in net.input.mean_rgb),
        net.loss.distance_threshold,
    )
    return model.eval()


def fold_for_inference(model: DlibFaceResNet) -> DlibFaceResNet:
    """An inference copy: each affine folded into its convolution, channels_last, no grads.

    ``affine(conv(x)) = conv'(x)`` with ``W' = W * gamma[o]`` and ``b' = b * gamma + beta``
    (computed in float64). The copy is in eval mode with ``requires_grad`` off; ``model``
    is left untouched, so it can still be fine-tuned.
    """
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for conv, owner, name in folded.conv_affine_pairs():
            affine = getattr(owner, name)
            if not isinstance(affine, DlibAffine):
                raise ValueError(f"{name} of {type(owner).__name__} is already folded")
            gamma = affine.weight.detach().double()
            beta = affine.bias.detach().double()
            weight = conv.weight.detach().double() * gamma.view(-1, 1, 1, 1)
            bias = conv.bias.detach().double() if conv.bias is not None else 0.0
            conv.weight.copy_(weight.to(conv.weight.dtype))
            assert conv.bias is not None
            conv.bias.copy_((bias * gamma + beta).to(conv.bias.dtype))
            setattr(owner, name, nn.Identity())
    folded.requires_grad_(False)
    # Module.to accepts memory_format at run time; torch's stubs do not list it.
    folded = folded.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    folded.channels_last = True
    return folded
