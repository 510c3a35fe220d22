"""The pretrained encoder's head: identity at start, trained with the contrastive loss on frozen
descriptors, saved and rebuilt; the encoder wraps dlib's preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from siamese.metrics import eer, pair_distances_from_matrix
from siamese.pretrained import (
    DlibFaceEncoder,
    HeadConfig,
    ResidualHead,
    read_checkpoint,
    save_checkpoint,
    train_head,
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
    config = HeadConfig(epochs=15, lr=1e-2, margin=4.0, identities_per_batch=8, seed=0)
    result = train_head(x, labels, config)
    assert len(result.losses) == 15 and result.losses[-1] < result.losses[0]
    with torch.no_grad():
        adapted = result.head(torch.as_tensor(val_x)).numpy()
    before, after = _eer(val_x, val_labels), _eer(adapted, val_labels)
    assert after < 0.7 * before, (before, after)


def test_head_training_is_seeded() -> None:
    x, labels = _descriptors(0)
    config = HeadConfig(epochs=2, identities_per_batch=8, seed=3)
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
