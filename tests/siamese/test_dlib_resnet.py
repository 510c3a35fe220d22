"""dlib's face ResNet in torch: parity with dlib itself, folding, spatial sizes, bad files.

Parity compares with ``dlib.face_recognition_model_v1.compute_face_descriptor(chip)`` (the
150x150 aligned-chip overload, no jitter) on seeded noise, AT&T faces resized to 150x150 and
chips cut by dlib's own detector, landmarks and ``get_face_chip``. dlib is used here only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlibfile.format import DlibFormatError, DlibTruncatedError, read_dlib_network
from siamese.dlib_resnet import (
    EMBEDDING_DIM,
    DlibAffine,
    DlibFaceResNet,
    add_zero_padded,
    dlib_layer_tokens,
    fold_for_inference,
    load_dlib_resnet,
)
from tests.support import missing

torch.set_num_threads(1)

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
ATT_FACES = DATASETS / "att_faces"
# Per component, on descriptors whose components reach about 0.4.
PARITY_TOL = 1e-4


def _model_file(name: str) -> Path:
    from pipelines.services.model_files import ModelFileError, model_file

    try:
        return model_file(name)
    except ModelFileError as e:
        missing(str(e))


@pytest.fixture(scope="module")
def dat_path() -> Path:
    from pipelines.services.model_files import FACE_RESNET

    return _model_file(FACE_RESNET)


@pytest.fixture(scope="module")
def plain(dat_path: Path) -> DlibFaceResNet:
    return load_dlib_resnet(dat_path)


@pytest.fixture(scope="module")
def folded(plain: DlibFaceResNet) -> DlibFaceResNet:
    return fold_for_inference(plain)


@pytest.fixture(scope="module")
def dlib_descriptor(dat_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    try:
        import dlib
    except ImportError:
        missing("dlib is not installed (pip install dlib-bin)")
    rec = dlib.face_recognition_model_v1(str(dat_path))

    def describe(chips: np.ndarray) -> np.ndarray:
        return np.stack([np.array(rec.compute_face_descriptor(c, 0)) for c in chips])

    return describe


def _noise_chips() -> np.ndarray:
    rng = np.random.default_rng(20240601)
    white = rng.integers(0, 256, (2, 150, 150, 3), dtype=np.uint8)
    # Smooth noise (8x8 upsampled) gives the deep layers larger, more face-like activations.
    coarse = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    smooth = np.stack(
        [np.asarray(Image.fromarray(c).resize((150, 150), Image.BILINEAR)) for c in coarse]
    )
    return np.concatenate([white, smooth])


def _att_files() -> list[Path]:
    if not (ATT_FACES / "s1").is_dir():
        missing(f"AT&T faces not found at {ATT_FACES}")
    return [ATT_FACES / s / f"{i}.pgm" for s, i in (("s1", 1), ("s2", 2), ("s7", 5))]


def _att_resized_chips() -> np.ndarray:
    chips = []
    for path in _att_files():
        grey = Image.open(path).convert("L").resize((150, 150), Image.BILINEAR)
        chips.append(np.asarray(grey.convert("RGB")))
    return np.stack(chips)


def _att_dlib_chips() -> np.ndarray:
    import dlib

    from pipelines.services.model_files import SHAPE_PREDICTOR_5

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(_model_file(SHAPE_PREDICTOR_5)))
    chips = []
    for path in _att_files()[:2]:
        image = Image.open(path).convert("RGB")
        big = np.asarray(image.resize((image.width * 2, image.height * 2), Image.BILINEAR))
        faces = detector(big, 1)
        assert len(faces) >= 1, f"dlib's HOG detector found no face in {path}"
        chips.append(dlib.get_face_chip(big, predictor(big, faces[0]), 150, 0.25))
    return np.stack(chips)


CHIP_SETS: dict[str, Callable[[], np.ndarray]] = {
    "noise": _noise_chips,
    "att_resized": _att_resized_chips,
    "att_dlib_chips": _att_dlib_chips,
}


@pytest.fixture(scope="module", params=list(CHIP_SETS))
def chips_and_reference(
    request: pytest.FixtureRequest, dlib_descriptor: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    chips = CHIP_SETS[request.param]()
    assert chips.dtype == np.uint8 and chips.shape[1:] == (150, 150, 3)
    return chips, dlib_descriptor(chips)


# ------------------------------------------------------------------------------------------
# Parity with dlib


@pytest.mark.parametrize("kind", ["plain", "folded"])
def test_descriptors_match_dlib(
    kind: str,
    plain: DlibFaceResNet,
    folded: DlibFaceResNet,
    chips_and_reference: tuple[np.ndarray, np.ndarray],
) -> None:
    chips, reference = chips_and_reference
    model = plain if kind == "plain" else folded
    ours = model.embed(chips, batch_size=2)
    assert ours.shape == (len(chips), EMBEDDING_DIM) and ours.dtype == np.float32
    assert np.abs(reference).max() > 0.05, "the reference descriptors are degenerate"
    diff = np.abs(ours - reference).max()
    assert diff <= PARITY_TOL, f"{kind}: max |torch - dlib| = {diff:.3g}"


def test_same_descriptor_single_chip_or_batch(plain: DlibFaceResNet) -> None:
    chips = _noise_chips()[:2]
    one = plain.embed(chips[0])
    both = plain.embed(chips)
    np.testing.assert_allclose(one[0], both[0], atol=1e-5)


def test_loaded_settings_come_from_the_file(plain: DlibFaceResNet, dat_path: Path) -> None:
    np.testing.assert_allclose(plain.mean_rgb.numpy(), [122.782, 117.001, 104.298], atol=1e-3)
    assert plain.distance_threshold == pytest.approx(0.6)
    net = read_dlib_network(dat_path, dlib_layer_tokens())
    assert net.loss.margin == pytest.approx(0.04)
    # 29 convs (stem + 2 per block), each followed by an affine, and the final fc.
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds.count("ConvLayer") == 29 and kinds.count("AffineLayer") == 29
    assert kinds[-1] == "FcLayer" and net.layers[-1].weight.shape == (256, 128)


# ------------------------------------------------------------------------------------------
# Architecture details that differ from the usual torch ResNet


def test_spatial_sizes_follow_dlib_rounding() -> None:
    model = DlibFaceResNet().eval()
    sizes: list[tuple[int, ...]] = []
    for block in model.blocks:
        block.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[1:])))
    with torch.inference_mode():
        model(torch.zeros(1, 3, 150, 150))
    # 150 -conv7/2-> 72 -maxpool3/2-> 35; unpadded stride-2 convs give 17, 8, 3, 1 while
    # the 2x2 average pools give 17, 8, 4, 2: add_prev keeps the larger.
    expected = (
        [(32, 35, 35)] * 3
        + [(64, 17, 17)] * 4
        + [(128, 8, 8)] * 3
        + [(256, 4, 4)] * 3
        + [(256, 2, 2)]
    )
    assert sizes == expected


def test_add_zero_padded_fills_missing_channels_rows_and_columns() -> None:
    a = torch.ones(1, 4, 2, 2)
    b = torch.full((1, 2, 3, 3), 10.0)
    out = add_zero_padded(a, b)
    assert out.shape == (1, 4, 3, 3)
    assert out[0, 0, 0, 0] == 11  # both
    assert out[0, 3, 0, 0] == 1  # channel only in a
    assert out[0, 0, 2, 2] == 10  # row/column only in b
    assert out[0, 3, 2, 2] == 0  # in neither
    assert torch.equal(add_zero_padded(a, a), a + a)


def _randomised(model: DlibFaceResNet, seed: int = 0) -> DlibFaceResNet:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, DlibAffine):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, torch.nn.Conv2d):
                assert m.bias is not None
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    return model.eval()


def test_folding_preserves_outputs_and_leaves_the_original_trainable() -> None:
    model = _randomised(DlibFaceResNet())
    folded = fold_for_inference(model)
    x = torch.randn(2, 3, 150, 150, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(x)
        got = folded(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, DlibAffine) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())
    assert folded.conv.weight.is_contiguous(memory_format=torch.channels_last)
    # The source model still has its affine parameters, trainable.
    affines = [m for m in model.modules() if isinstance(m, DlibAffine)]
    assert len(affines) == 29 and all(a.weight.requires_grad for a in affines)
    with pytest.raises(ValueError, match="already folded"):
        fold_for_inference(folded)


def test_plain_model_can_be_fine_tuned() -> None:
    model = _randomised(DlibFaceResNet()).train()
    for m in model.modules():
        if isinstance(m, DlibAffine):
            m.requires_grad_(False)
    x = torch.randn(2, 3, 150, 150, generator=torch.Generator().manual_seed(2))
    model(x).pow(2).sum().backward()
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0
    assert model.blocks[0].conv1.weight.grad is not None
    affine = model.blocks[0].affine1
    assert isinstance(affine, DlibAffine) and affine.weight.grad is None


def test_bad_inputs_are_refused_and_empty_input_is_fine() -> None:
    model = DlibFaceResNet()
    assert model.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, EMBEDDING_DIM)
    with pytest.raises(ValueError, match="uint8 RGB chips"):
        model.preprocess(np.zeros((1, 112, 92, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB chips"):
        model.preprocess(np.zeros((1, 150, 150, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3, 150, 150\)"):
        model(torch.zeros(1, 150, 150, 3))


# ------------------------------------------------------------------------------------------
# Files that are not an intact dlib face ResNet


@pytest.fixture(scope="module")
def dat_bytes(dat_path: Path) -> bytes:
    return dat_path.read_bytes()


@pytest.mark.parametrize("keep", [0, 10, 400, 5_000_000, -1])
def test_truncated_file_gives_a_clear_error(tmp_path: Path, dat_bytes: bytes, keep: int) -> None:
    path = tmp_path / "truncated.dat"
    path.write_bytes(dat_bytes[:keep])
    with pytest.raises(DlibTruncatedError, match="ends early|is empty") as info:
        load_dlib_resnet(path)
    assert str(path) in str(info.value) and "download" in str(info.value)


def test_other_files_give_a_clear_error(tmp_path: Path) -> None:
    from pipelines.services.model_files import SHAPE_PREDICTOR_5

    text = tmp_path / "notes.dat"
    text.write_text("this is not a network\n" * 10)
    cases = {
        text: "not a dlib file",
        _model_file(SHAPE_PREDICTOR_5): "shape predictor",
        tmp_path / "missing.dat": "no such file",
        tmp_path: "is a directory",
    }
    for path, why in cases.items():
        with pytest.raises(DlibFormatError, match=why) as info:
            load_dlib_resnet(path)
        assert str(path) in str(info.value)


def test_a_different_layer_is_named(tmp_path: Path, dat_bytes: bytes) -> None:
    # The first relu_ in the file is the innermost: con, affine, relu above the input, so
    # layer<128> of 130 layers between loss (layer<0>) and input (layer<131>).
    marker = b"\x01\x05relu_"
    assert marker in dat_bytes
    path = tmp_path / "other_net.dat"
    path.write_bytes(dat_bytes.replace(marker, b"\x01\x05sig__", 1))
    with pytest.raises(DlibFormatError, match=r"layer<128> is 'sig__' .* 'relu'") as info:
        load_dlib_resnet(path)
    assert str(path) in str(info.value)


def test_a_different_geometry_is_named(tmp_path: Path, dat_bytes: bytes) -> None:
    # Claim the stem's 7x7 stride-2 conv has padding 1 (con_4 stores padding after strides).
    # After its parameters: 32 filters, 7 x 7, stride 2, 2, padding 0, 0.
    fields = b"\x01\x20\x01\x07\x01\x07\x01\x02\x01\x02\x01\x00\x01\x00"
    at = dat_bytes.index(fields, dat_bytes.index(b"con_4"))
    data = bytearray(dat_bytes)
    data[at : at + len(fields)] = fields[:-4] + b"\x01\x01\x01\x01"
    path = tmp_path / "padded.dat"
    path.write_bytes(bytes(data))
    with pytest.raises(DlibFormatError, match=r"layer<130> .* convolution .* padding"):
        load_dlib_resnet(path)
