"""Adapting the pretrained encoder: a head (identity at start) on frozen descriptors, or the last
stages over the frozen trunk, trained with the contrastive loss, saved and rebuilt; the encoder
wraps dlib's preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from siamese.dlib_resnet import LAST_STAGES_FROM, DlibAffine, DlibFaceResNet
from siamese.metrics import eer, pair_distances_from_matrix
from siamese.pretrained import (
    DlibFaceEncoder,
    DlibTrunk,
    ResidualHead,
    StagesTop,
    TuneConfig,
    apply_stages,
    read_checkpoint,
    save_checkpoint,
    top_parameter_names,
    train_head,
    train_stages,
    trunk_shape,
)


def _descriptors(seed: int, people: int = 24, per: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Clusters that overlap along a few nuisance directions a head can learn to ignore."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.5, (people, 16))
    labels = np.repeat(np.arange(people), per)
    x = centres[labels] + rng.normal(0, 0.1, (labels.size, 16))
    x[:, :4] += rng.normal(0, 1.5, (labels.size, 4))  # nuisance, same for every person
    return x.astype(np.float32), labels


def _eer(x: np.ndarray, labels: np.ndarray) -> float:
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    return eer(*pair_distances_from_matrix(d, labels))[0]


def test_untrained_head_is_the_identity() -> None:
    head = ResidualHead(16)
    x = torch.randn(5, 16)
    assert torch.equal(head(x), x)


def test_head_trained_with_contrastive_loss_separates_unseen_people() -> None:
    x, labels = _descriptors(0)
    val_x, val_labels = _descriptors(1)  # other people: the head must generalise
    config = TuneConfig(epochs=15, lr=1e-2, margin=4.0, identities_per_batch=8, seed=0)
    result = train_head(x, labels, config)
    assert len(result.losses) == 15 and result.losses[-1] < result.losses[0]
    with torch.no_grad():
        adapted = result.module(torch.as_tensor(val_x)).numpy()
    before, after = _eer(val_x, val_labels), _eer(adapted, val_labels)
    assert after < 0.7 * before, (before, after)


def test_head_training_is_seeded() -> None:
    x, labels = _descriptors(0)
    config = TuneConfig(epochs=2, identities_per_batch=8, seed=3)
    a, b = train_head(x, labels, config), train_head(x, labels, config)
    assert a.losses == b.losses
    with pytest.raises(ValueError, match="disagree"):
        train_head(x, labels[:-1], config)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    head = ResidualHead(128)
    torch.nn.init.normal_(head.linear.weight)
    save_checkpoint(tmp_path / "m.pt", backbone_sha256="ab" * 32, head=head, meta={"x": 1})
    payload = read_checkpoint(tmp_path / "m.pt")
    assert payload["backbone_sha256"] == "ab" * 32 and payload["meta"] == {"x": 1}
    again = ResidualHead(128)
    again.load_state_dict(payload["head"])
    assert torch.equal(again.linear.weight, head.linear.weight)
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception):  # noqa: B017 - torch's own unpickling error
        read_checkpoint(tmp_path / "other.pt")
    torch.save({"kind": "something-else"}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="not a dlib-resnet checkpoint"):
        read_checkpoint(tmp_path / "wrong.pt")


def test_encoder_applies_dlibs_preprocessing() -> None:
    class Body(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    enc = DlibFaceEncoder(Body())  # type: ignore[arg-type]
    x = torch.full((1, 3, 150, 150), 0.5)
    got = enc(x)[0]
    want = (127.5 - torch.tensor([122.782, 117.001, 104.298])) / 256
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="150"):
        enc(torch.zeros(1, 3, 100, 100))


def test_flip_average_is_the_mean_of_the_chip_and_its_mirror(tmp_path: Path) -> None:
    class Body(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, 0, :4]  # the first row's left pixels: changed by the mirror

    x = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(0))
    plain = DlibFaceEncoder(Body())  # type: ignore[arg-type]
    flip = DlibFaceEncoder(Body(), flip_average=True)  # type: ignore[arg-type]
    mirrored = plain(torch.flip(x, dims=(3,)))
    assert torch.allclose(flip(x), (plain(x) + mirrored) / 2)
    assert not torch.allclose(flip(x), plain(x))
    save_checkpoint(tmp_path / "f.pt", backbone_sha256="ab" * 32, head=None, meta={})
    assert read_checkpoint(tmp_path / "f.pt")["flip_average"] is False
    save_checkpoint(
        tmp_path / "f.pt", backbone_sha256="ab" * 32, head=None, meta={}, flip_average=True
    )
    assert read_checkpoint(tmp_path / "f.pt")["flip_average"] is True


def _random_body(seed: int = 0) -> DlibFaceResNet:
    """The face ResNet with seeded weights (dlib's real ones are tested in test_dlib_resnet)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the convolutions' default initialisation
    body = DlibFaceResNet()
    with torch.no_grad():
        for m in body.modules():
            if isinstance(m, DlibAffine):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    return body.eval()


def test_trunk_then_top_is_the_whole_network() -> None:
    body = _random_body()
    x = torch.randn(3, 3, 150, 150, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = body.trunk(x, LAST_STAGES_FROM)
        assert tuple(h.shape[1:]) == trunk_shape() == (128, 8, 8)
        assert torch.allclose(body.top(h, LAST_STAGES_FROM), body(x), atol=1e-6)
        trunk = DlibTrunk(body)(torch.rand(2, 3, 150, 150))
    assert trunk.shape == (2, 128 * 8 * 8)


def test_last_stages_train_and_the_trunk_stays_frozen() -> None:
    body = _random_body()
    trunk_before = {k: v.clone() for k, v in body.state_dict().items()}
    rng = np.random.default_rng(0)
    people, per = 8, 4
    base = rng.uniform(0, 1, (people, 3, 150, 150)).astype(np.float32)
    labels = np.repeat(np.arange(people), per)
    x = np.clip(base[labels] + rng.normal(0, 0.25, (labels.size, 3, 150, 150)), 0, 1)
    with torch.no_grad():
        h = DlibTrunk(body)(torch.as_tensor(x, dtype=torch.float32)).numpy()
    config = TuneConfig(
        mode="last-stages", epochs=6, lr=1e-3, margin=2.0, identities_per_batch=4, seed=0
    )
    result = train_stages(body, h, labels, config)
    assert isinstance(result.module, StagesTop) and len(result.losses) == 6
    assert result.losses[-1] < result.losses[0], result.losses
    top = set(top_parameter_names(body))
    assert top and all(n.startswith(("blocks.1", "fc.")) for n in top)
    after = body.state_dict()
    changed = {k for k in after if not torch.equal(after[k], trunk_before[k])}
    assert changed and changed <= top  # only the last stages moved
    assert set(result.module.trained_state()) == top
    with pytest.raises(ValueError, match="activations must be"):
        train_stages(body, h[:, :100], labels, config)


def test_fine_tuned_stages_round_trip_into_a_fresh_body(tmp_path: Path) -> None:
    body = _random_body()
    top = StagesTop(body)
    with torch.no_grad():
        body.fc.weight.mul_(-1.0)  # as if fine-tuned
        body.blocks[12].conv2.weight.add_(0.01)
    save_checkpoint(tmp_path / "m.pt", backbone_sha256="cd" * 32, head=None, stages=top, meta={})
    payload = read_checkpoint(tmp_path / "m.pt")
    assert payload["head"] is None and payload["stages"]["start"] == LAST_STAGES_FROM
    fresh = _random_body()
    x = torch.randn(2, 3, 150, 150, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert not torch.allclose(fresh(x), body(x))
        apply_stages(fresh, payload["stages"], tmp_path / "m.pt")
        assert torch.equal(fresh(x), body(x))
    broken = {"start": LAST_STAGES_FROM, "state": {"fc.weight": body.fc.weight}}
    with pytest.raises(ValueError, match="do not match"):
        apply_stages(fresh, broken, tmp_path / "m.pt")


def test_tune_config_checks_its_mode_and_defaults_the_rate_per_mode() -> None:
    assert TuneConfig().learning_rate == 1e-3
    assert TuneConfig(mode="last-stages").learning_rate == 3e-6
    assert TuneConfig(mode="last-stages", lr=1e-4).to_dict()["lr"] == 1e-4
    with pytest.raises(ValueError, match="mode must be one of"):
        TuneConfig(mode="everything")
