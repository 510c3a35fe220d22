"""Reading a network saved by dlib's DNN tools (``serialize(file) << net``) without dlib.

This module knows dlib's byte format and the layer kinds that dlib's face-recognition ResNet
(``dlib_face_recognition_resnet_model_v1.dat``, read by :mod:`siamese.dlib_resnet`) and dlib's
CNN face detector (``mmod_human_face_detector.dat``, read by :mod:`faces.mmod`) use; it does not
know a network's wiring. The caller passes the expected layer sequence and the file it expects
(named in every error) and gets back the layers' parameters in forward order, each checked
against what was expected, with the loss layer's and the input layer's settings.

The format, from dlib's sources (paths in github.com/davisking/dlib):

* Integers (``dlib/serialize.h``, ``pack_int``/``unpack_int``): one control byte whose low
  nibble is the number of little-endian magnitude bytes that follow and whose bit 0x80 marks a
  negative value (bits 0x70 are always 0); zero is ``01 00``.
* Strings: an integer length, then the bytes. Bools: the characters ``'1'`` or ``'0'``.
* Floating-point scalars (``dlib/float_details.h``): an int64 mantissa then an int16 exponent,
  each written as an integer above, with value ``mantissa * 2**exponent``; exponents 32000,
  32001 and 32002 stand for +inf, -inf and NaN.
* Tensors (``dlib/cuda/tensor.h``): version 2 is ``num_samples, k, nr, nc`` then raw
  little-endian float32 in N, K, row, column order; version 1 wrote each value as a scalar
  float. ``alias_tensor`` is version 1 followed by its four dimensions (no data).
* Networks (``dlib/dnn/core.h``): serialization is recursive, each layer writing its own
  version before its sub-network and its details after it. So the file holds the loss
  layer (version, details), then the version integers of every layer from the outermost
  inwards (tag and skip layers are nothing but a version 1: no tag id is stored), then the
  input layer's details, then each layer's details and bookkeeping from the innermost outwards.
* Layer details (``dlib/dnn/layers.h``, ``dlib/dnn/input.h``, ``dlib/dnn/loss.h``): each
  starts with a version string; both models were written by an older dlib and use ``con_4``,
  ``affine_``/``bn_con2`` and ``fc_2``, which current dlib still reads.
* ``loss_mmod_`` (``dlib/dnn/loss.h``) stores ``mmod_options``: an int version (1-4); the
  detector windows (version 1: one width and height; later: a vector of
  ``detector_window_details``, each an int version, width, height and, from version 2, a label);
  the losses per false alarm and per miss and the truth-match IoU (doubles); two
  ``test_box_overlap`` (IoU and percent-covered thresholds, doubles) for non-max suppression
  and for ignore boxes; from version 3 ``assume_image_pyramid`` (one byte); from version 4
  ``use_bounding_box_regression`` (bool) and ``bbr_lambda`` (double).
* ``input_rgb_image_pyramid`` (``dlib/dnn/input.h``) stores its three means; the ``...2``
  version adds the pyramid padding and outer padding (10 and 11 otherwise). Which
  ``pyramid_down<N>`` it was compiled with is not stored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# dlib's float_details special exponents (dlib/float_details.h).
_EXP_INF = 32000
_EXP_NINF = 32001
_EXP_NAN = 32002

# Structural layers: a version integer and nothing else (dlib/dnn/core.h add_tag_layer,
# add_skip_layer). Their tag ids are compile-time template arguments, absent from the file.
STRUCTURAL_PREFIXES = ("tag", "skip")

# The detail version strings each computational token accepts.
_DETAIL_VERSIONS: dict[str, frozenset[str]] = {
    "con": frozenset({"con_4", "con_5"}),
    "affine": frozenset({"affine_", "affine_2", "bn_con2"}),
    "relu": frozenset({"relu_"}),
    "max_pool": frozenset({"max_pool_2"}),
    "avg_pool": frozenset({"avg_pool_2"}),
    "add_prev": frozenset({"add_prev_"}),
    "fc": frozenset({"fc_2", "fc_3"}),
}

#: The file :func:`read_dlib_network` expects unless told otherwise.
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
MMOD_FILE = "mmod_human_face_detector.dat"


def _redownload(model_file: str) -> str:
    return f"download {model_file} again (dlib.net/files, or reinstall face-recognition-models)"


class DlibFormatError(ValueError):
    """A file that is not a dlib network of the expected architecture, or is damaged."""


class DlibTruncatedError(DlibFormatError):
    """The file ends before the network does (an interrupted download or copy)."""


# ------------------------------------------------------------------------------------------
# Layer records (forward order; parameters as float32 numpy arrays)


@dataclass(frozen=True)
class InputRgbLayer:
    """``input_rgb_image_sized<NR,NC>``: pixels become ``(value - mean) / 256``, RGB planes."""

    mean_rgb: tuple[float, float, float]
    rows: int
    cols: int


@dataclass(frozen=True)
class InputRgbPyramidLayer:
    """``input_rgb_image_pyramid<pyramid_down<N>>``: ``(value - mean) / 256`` per RGB plane,
    the photo's pyramid tiled in one image with ``padding`` px between levels and
    ``outer_padding`` px around (``N`` is compiled in, not stored)."""

    mean_rgb: tuple[float, float, float]
    padding: int
    outer_padding: int


@dataclass(frozen=True)
class DetectorWindow:
    """One of ``mmod_options::detector_windows``: the sliding window's size in pixels."""

    width: int
    height: int
    label: str = ""


@dataclass(frozen=True)
class BoxOverlap:
    """dlib's ``test_box_overlap``: two boxes overlap when their intersection over the box
    bounding both exceeds ``iou`` or covers more than ``percent_covered`` of either."""

    iou: float
    percent_covered: float


@dataclass(frozen=True)
class MmodLoss:
    """``loss_mmod_``: the settings detection needs (windows, non-max suppression)."""

    windows: tuple[DetectorWindow, ...]
    nms: BoxOverlap
    assume_image_pyramid: bool
    bounding_box_regression: bool


@dataclass(frozen=True)
class MetricLoss:
    """``loss_metric_``: only its settings; the descriptor is the raw output of the last layer."""

    margin: float
    distance_threshold: float


@dataclass(frozen=True)
class ConvLayer:
    """``con_``: ``weight`` is (filters, in_channels, rows, cols), cross-correlation like torch."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    weight: np.ndarray = field(repr=False)
    bias: np.ndarray | None = field(repr=False)

    @property
    def num_filters(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])


@dataclass(frozen=True)
class AffineLayer:
    """``affine_`` (a frozen batch norm): ``y = x * gamma + beta``, per channel in conv mode."""

    conv_mode: bool
    gamma: np.ndarray = field(repr=False)
    beta: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class ReluLayer:
    """``relu_``."""


@dataclass(frozen=True)
class PoolLayer:
    """``max_pool_`` / ``avg_pool_``; a window of 0 means the whole input (``*_everything``)."""

    kind: str  # "max" or "avg"
    window: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class AddPrevLayer:
    """``add_prev_``: adds a tagged output, zero-filling whichever tensor is smaller."""


@dataclass(frozen=True)
class FcLayer:
    """``fc_``: ``weight`` is stored input-major, (num_inputs, num_outputs): ``y = x @ weight``."""

    weight: np.ndarray = field(repr=False)
    bias: np.ndarray | None = field(repr=False)

    @property
    def num_inputs(self) -> int:
        return int(self.weight.shape[0])

    @property
    def num_outputs(self) -> int:
        return int(self.weight.shape[1])


Layer = ConvLayer | AffineLayer | ReluLayer | PoolLayer | AddPrevLayer | FcLayer


@dataclass(frozen=True)
class DlibNetwork:
    """A parsed network: the computational layers in forward order (tags and skips dropped).

    ``numbers[i]`` is ``layers[i]``'s index as dlib prints the network (``layer<0>`` = loss).
    """

    path: Path
    loss: MetricLoss | MmodLoss
    input: InputRgbLayer | InputRgbPyramidLayer
    layers: list[Layer]
    numbers: list[int]


# ------------------------------------------------------------------------------------------
# Primitive reader


class _Reader:
    """Cursor over the file's bytes; every read that runs past the end is a clear error."""

    def __init__(self, data: bytes, path: Path, model_file: str = RESNET_FILE) -> None:
        self.model_file = model_file
        self.data = data
        self.view = memoryview(data)
        self.pos = 0
        self.path = path
        self.context = "the start of the file"

    def fail(self, problem: str, cls: type[DlibFormatError] = DlibFormatError) -> DlibFormatError:
        return cls(
            f"{self.path}: {problem} (at byte {self.pos} of {len(self.data)}, reading "
            f"{self.context}); it is not an intact {self.model_file} - "
            f"{_redownload(self.model_file)}"
        )

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"the file ends early: {n} more bytes were needed", DlibTruncatedError)
        chunk = self.view[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def integer(self, *, signed: bool = True) -> int:
        """dlib/serialize.h ``unpack_int``."""
        control = self.take(1)[0]
        if control & 0x70:
            raise self.fail(f"byte 0x{control:02x} is not a dlib integer header")
        size = control & 0x0F
        if size > 8:
            raise self.fail(f"an integer claims {size} bytes (at most 8)")
        magnitude = int.from_bytes(self.take(size), "little")
        if control & 0x80:
            if not signed:
                raise self.fail("a negative value where dlib stores an unsigned integer")
            return -magnitude
        return magnitude

    def unsigned(self) -> int:
        return self.integer(signed=False)

    def string(self, *, max_len: int = 256) -> str:
        length = self.unsigned()
        if length > max_len:
            raise self.fail(f"a layer name claims {length} bytes")
        raw = bytes(self.take(length))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"bytes {raw[:32]!r} are not a dlib layer name") from None

    def boolean(self) -> bool:
        ch = self.take(1)[0]
        if ch == ord("1"):
            return True
        if ch == ord("0"):
            return False
        raise self.fail(f"byte 0x{ch:02x} is not a dlib bool ('1' or '0')")

    def scalar(self) -> float:
        """dlib/float_details.h: ``mantissa * 2**exponent``."""
        mantissa = self.integer()
        exponent = self.integer()
        if exponent == _EXP_INF:
            return math.inf
        if exponent == _EXP_NINF:
            return -math.inf
        if exponent == _EXP_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def version(self, allowed: Sequence[int], what: str) -> int:
        value = self.integer()
        if value not in allowed:
            raise self.fail(f"{what} has version {value}, expected one of {sorted(allowed)}")
        return value

    def dims(self) -> tuple[int, int, int, int]:
        n, k, nr, nc = (self.integer() for _ in range(4))
        if min(n, k, nr, nc) < 0:
            raise self.fail(f"negative tensor dimensions {(n, k, nr, nc)}")
        return n, k, nr, nc

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor`` as a 4-d float32 array (dlib/cuda/tensor.h)."""
        version = self.version((1, 2), "a tensor")
        shape = self.dims()
        count = math.prod(shape)
        if version == 2:
            remaining = len(self.data) - self.pos
            if count * 4 > remaining:
                raise self.fail(
                    f"the file ends early: a tensor of shape {shape} needs {count * 4} bytes, "
                    f"{remaining} remain",
                    DlibTruncatedError,
                )
            values = np.frombuffer(self.take(count * 4), dtype="<f4").astype(np.float32)
        else:
            values = np.array([self.scalar() for _ in range(count)], dtype=np.float32)
        return values.reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.version((1,), "an alias_tensor")
        return self.dims()

    def at_end(self) -> bool:
        return self.pos == len(self.data)


def _slice(params: np.ndarray, offset: int, shape: tuple[int, ...], r: _Reader) -> np.ndarray:
    flat = params.reshape(-1)
    size = math.prod(shape)
    if offset + size > flat.size:
        raise r.fail(f"parameters hold {flat.size} values, the layout needs {offset + size}")
    return flat[offset : offset + size].reshape(shape).copy()


# ------------------------------------------------------------------------------------------
# Layer details (each after its version string)


def _read_con(r: _Reader, version: str) -> ConvLayer:
    params = r.tensor()
    num_filters = r.integer()
    nr, nc = r.integer(), r.integer()
    stride = (r.integer(), r.integer())
    padding = (r.integer(), r.integer())
    filters = r.alias_tensor()
    biases = r.alias_tensor()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.scalar()
    use_bias = r.boolean() if version == "con_5" else True
    if filters[0] != num_filters or filters[2:] != (nr, nc):
        raise r.fail(f"con_ filters {filters} disagree with {num_filters} filters of {nr}x{nc}")
    weight = _slice(params, 0, filters, r)
    bias = None
    if use_bias and math.prod(biases) > 0:
        bias = _slice(params, math.prod(filters), (num_filters,), r)
    return ConvLayer(kernel=(nr, nc), stride=stride, padding=padding, weight=weight, bias=bias)


def _read_affine(r: _Reader, version: str) -> AffineLayer:
    if version == "bn_con2":
        return _read_bn_as_affine(r)
    params = r.tensor()
    gamma_shape = r.alias_tensor()
    r.alias_tensor()  # beta: same shape as gamma
    mode = r.integer()  # dlib layer_mode: 0 CONV_MODE, 1 FC_MODE
    disabled = r.boolean() if version == "affine_2" else False
    size = math.prod(gamma_shape)
    if disabled:  # fuse_convolutions() already folded it into the conv below
        gamma, beta = np.ones(size, np.float32), np.zeros(size, np.float32)
    else:
        gamma = _slice(params, 0, (size,), r)
        beta = _slice(params, size, (size,), r)
    return AffineLayer(conv_mode=mode == 0, gamma=gamma, beta=beta)


def _read_bn_as_affine(r: _Reader) -> AffineLayer:
    """``bn_con2`` read as dlib's ``affine_(const bn_&)`` constructor converts it."""
    params = r.tensor()
    gamma_shape = r.alias_tensor()
    r.alias_tensor()
    r.tensor()  # means
    r.tensor()  # invstds
    running_means = r.tensor().reshape(-1)
    running_variances = r.tensor().reshape(-1)
    r.unsigned()  # num_updates
    r.unsigned()  # running_stats_window_size
    for _ in range(4):
        r.scalar()
    eps = r.scalar()
    size = math.prod(gamma_shape)
    g = _slice(params, 0, (size,), r)
    b = _slice(params, size, (size,), r)
    gamma = (g / np.sqrt(running_variances + np.float32(eps))).astype(np.float32)
    beta = (b - gamma * running_means).astype(np.float32)
    return AffineLayer(conv_mode=True, gamma=gamma, beta=beta)


def _read_pool(r: _Reader, version: str) -> PoolLayer:
    nr, nc = r.integer(), r.integer()
    stride = (r.integer(), r.integer())
    padding = (r.integer(), r.integer())
    kind = "max" if version.startswith("max") else "avg"
    return PoolLayer(kind=kind, window=(nr, nc), stride=stride, padding=padding)


def _read_fc(r: _Reader, version: str) -> FcLayer:
    num_outputs = r.unsigned()
    num_inputs = r.unsigned()
    params = r.tensor()
    weights = r.alias_tensor()
    biases = r.alias_tensor()
    bias_mode = r.integer()  # dlib fc_bias_mode: 0 FC_HAS_BIAS, 1 FC_NO_BIAS
    for _ in range(4):
        r.scalar()
    use_bias = r.boolean() if version == "fc_3" else True
    if weights[:2] != (num_inputs, num_outputs):
        raise r.fail(f"fc_ weights {weights} disagree with {num_inputs} -> {num_outputs}")
    weight = _slice(params, 0, (num_inputs, num_outputs), r)
    bias = None
    if bias_mode == 0 and use_bias and math.prod(biases) > 0:
        bias = _slice(params, num_inputs * num_outputs, (num_outputs,), r)
    return FcLayer(weight=weight, bias=bias)


def _read_details(r: _Reader, token: str, number: int) -> Layer:
    """One layer's details, checked to be of the kind ``token`` names."""
    version = r.string()
    allowed = _DETAIL_VERSIONS[token]
    if version not in allowed:
        raise DlibFormatError(
            f"{r.path}: layer<{number}> is '{version}' in the file where {r.model_file} "
            f"has '{token}' ({' / '.join(sorted(allowed))}); this "
            f"file holds a different network. Use {r.model_file}"
        )
    if token == "con":
        return _read_con(r, version)
    if token == "affine":
        return _read_affine(r, version)
    if token in ("max_pool", "avg_pool"):
        return _read_pool(r, version)
    if token == "fc":
        return _read_fc(r, version)
    if token == "relu":
        return ReluLayer()
    return AddPrevLayer()


def _read_layer_trailer(r: _Reader, version: int) -> None:
    """dlib/dnn/core.h ``add_layer`` state after the details: flags and cached tensors."""
    for _ in range(3):  # setup called, gradient stale, output getters disabled
        r.boolean()
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    if version == 2:
        r.tensor()  # params_grad


def _read_input_trailer(r: _Reader, version: int) -> None:
    """The bottom ``add_layer`` (the one holding the input layer) keeps a little more."""
    for _ in range(3):
        r.boolean()
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    r.tensor()  # grad_final
    if version == 3:
        r.unsigned()  # sample expansion factor


def _read_loss(r: _Reader) -> MetricLoss | MmodLoss:
    r.context = "the loss layer"
    if not r.data:
        raise r.fail("the file is empty", DlibTruncatedError)
    try:
        first = r.integer()
        name = r.string(max_len=64) if first == 1 else ""
    except DlibTruncatedError:
        raise
    except DlibFormatError:
        first, name = -1, ""
    if first != 1 or not name.startswith("loss_"):
        raise DlibFormatError(
            f"{r.path}: does not start like a dlib DNN (a loss layer's version and name); it "
            f"is not {r.model_file} - another dlib model (e.g. a "
            "shape predictor) or not a dlib file at all"
        )
    if name == "loss_metric_":
        return MetricLoss(margin=0.1, distance_threshold=0.75)  # dlib's old hard-coded values
    if name == "loss_metric_2":
        return MetricLoss(margin=r.scalar(), distance_threshold=r.scalar())
    if name == "loss_mmod_":
        return _read_mmod_options(r)
    raise DlibFormatError(
        f"{r.path}: the network's loss layer is '{name}', neither loss_metric nor loss_mmod; "
        f"this is not {r.model_file}"
    )


def _read_mmod_options(r: _Reader) -> MmodLoss:
    """``mmod_options`` (dlib/dnn/loss.h ``deserialize(mmod_options&)``)."""
    r.context = "the loss layer's mmod_options"
    version = r.version((1, 2, 3, 4), "mmod_options")
    if version == 1:
        windows = [DetectorWindow(r.unsigned(), r.unsigned())]
    else:
        windows = []
        for _ in range(r.unsigned()):
            item = r.version((1, 2), "a detector window")
            width, height = r.unsigned(), r.unsigned()
            windows.append(DetectorWindow(width, height, r.string() if item == 2 else ""))
    for _ in range(3):  # loss per false alarm, per missed target, truth-match IoU
        r.scalar()
    nms = BoxOverlap(iou=r.scalar(), percent_covered=r.scalar())
    r.scalar(), r.scalar()  # overlaps_ignore: training only
    pyramid = True
    if version >= 3:
        pyramid = bool(r.take(1)[0])  # a uint8, written as one raw byte
    bbr = False
    if version >= 4:
        bbr = r.boolean()
        r.scalar()  # bbr_lambda: training only
    if not windows or any(w.width < 1 or w.height < 1 for w in windows):
        raise r.fail(f"detector windows {windows} are empty")
    return MmodLoss(
        windows=tuple(windows), nms=nms, assume_image_pyramid=pyramid, bounding_box_regression=bbr
    )


_PYRAMID_INPUTS = ("input_rgb_image_pyramid", "input_rgb_image_pyramid2")


def _read_input(r: _Reader) -> InputRgbLayer | InputRgbPyramidLayer:
    r.context = "the input layer"
    name = r.string(max_len=64)
    if name != "input_rgb_image_sized" and name not in _PYRAMID_INPUTS:
        raise DlibFormatError(
            f"{r.path}: the input layer is '{name}', expected input_rgb_image_sized "
            f"or input_rgb_image_pyramid; this file holds a different network than {r.model_file}"
        )
    mean_rgb = (r.scalar(), r.scalar(), r.scalar())
    if name == "input_rgb_image_sized":
        rows, cols = r.unsigned(), r.unsigned()
        return InputRgbLayer(mean_rgb=mean_rgb, rows=rows, cols=cols)
    padding, outer = (r.unsigned(), r.unsigned()) if name.endswith("2") else (10, 11)
    return InputRgbPyramidLayer(mean_rgb=mean_rgb, padding=padding, outer_padding=outer)


def read_dlib_network(
    path: str | Path, tokens: Sequence[str], *, model_file: str = RESNET_FILE
) -> DlibNetwork:
    """Parse a dlib network (metric or MMOD loss) whose layers, input first, are ``tokens``.

    ``model_file`` names the file the caller expects, for the error messages (which say to
    download it again). The caller checks the kinds of ``loss`` and ``input`` it needs.

    ``tokens`` names every layer between the input and the loss, in forward order: ``con``,
    ``affine``, ``relu``, ``max_pool``, ``avg_pool``, ``add_prev``, ``fc`` for computational
    layers and ``tag<N>`` / ``skip<N>`` for structural ones. The file is checked against it
    layer by layer; any difference raises :class:`DlibFormatError` naming the file.

    Messages number layers as dlib's ``cout << net`` does: ``layer<0>`` is the loss,
    ``layer<1>`` the last layer before it, ``layer<len(tokens) + 1>`` the input.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DlibFormatError(f"{path}: no such file; {_redownload(model_file)}") from None
    except IsADirectoryError:
        raise DlibFormatError(f"{path}: is a directory, not a dlib .dat file") from None
    for token in tokens:
        if token not in _DETAIL_VERSIONS and not token.startswith(STRUCTURAL_PREFIXES):
            raise ValueError(f"unknown layer token {token!r}")
    if not tokens or tokens[0].startswith(STRUCTURAL_PREFIXES):
        raise ValueError("the first layer above the input must be a computational layer")
    r = _Reader(data, path, model_file)
    loss = _read_loss(r)

    # Versions, outermost first: structural layers are exactly 1, add_layer 1 or 2, and the
    # bottom add_layer (directly on the input) 2 or 3.
    versions: dict[int, int] = {}
    for number in range(1, len(tokens) + 1):
        token = tokens[len(tokens) - number]
        r.context = f"the version of layer<{number}> ({token})"
        if token.startswith(STRUCTURAL_PREFIXES):
            allowed: tuple[int, ...] = (1,)
        elif number == len(tokens):
            allowed = (2, 3)
        else:
            allowed = (1, 2)
        versions[number] = r.version(allowed, f"layer<{number}> ({token})")
    net_input = _read_input(r)

    # Details, innermost first.
    layers: list[Layer] = []
    numbers: list[int] = []
    for index, token in enumerate(tokens):
        if token.startswith(STRUCTURAL_PREFIXES):
            continue
        number = len(tokens) - index
        r.context = f"layer<{number}> ({token})"
        layers.append(_read_details(r, token, number))
        numbers.append(number)
        if index == 0:
            _read_input_trailer(r, versions[number])
        else:
            _read_layer_trailer(r, versions[number])
    if not r.at_end():
        logger.warning("%s: %d bytes after the network were ignored", path, len(data) - r.pos)
    logger.info("read %d layers from %s", len(layers), path)
    return DlibNetwork(path=path, loss=loss, input=net_input, layers=layers, numbers=numbers)
