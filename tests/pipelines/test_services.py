"""Services as plain functions: no Prefect, no server (SQLite under a temporary home)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.services import embedding, publishing
from pipelines.services.enrolment import remove_identity
from pipelines.services.errors import ModelError
from pipelines.services.models import EncoderCache, ModelRef, resolve_model
from pipelines.services.runtime import Runtime
from pipelines.services.scoring import (
    mean_template,
    operating_threshold,
    verification_pairs,
)
from pipelines.services.training import TrainOptions
from siamese.openset import fpir_at


def test_mean_template_normalises_only_when_asked() -> None:
    v = np.array([[3.0, 0.0], [0.0, 4.0]], np.float32)
    assert mean_template(v, normalize=False) == pytest.approx([1.5, 2.0])
    unit = mean_template(v, normalize=True)
    assert float(np.linalg.norm(unit)) == pytest.approx(1.0)
    assert unit == pytest.approx([0.6, 0.8])
    with pytest.raises(ValueError, match="n >= 1"):
        mean_template(np.zeros((0, 2)), normalize=True)


def test_operating_threshold_meets_the_target_and_falls_back_to_the_largest_finite() -> None:
    best = np.linspace(0.1, 1.0, 100)
    t = operating_threshold(0.05, best)
    assert fpir_at(t, best) <= 0.05 < fpir_at(t + 0.02, best)
    # 10% of 3 searches allows no alarm at all: just below the smallest distance.
    assert operating_threshold(0.1, np.array([0.5, 0.7, 0.9])) < 0.5
    # Every finite score allowed: the largest finite one, never inf.
    assert operating_threshold(0.9, np.array([0.2, 0.4, np.inf])) == pytest.approx(0.4)
    assert operating_threshold(0.5, np.array([np.inf, np.inf])) == 0.0


def test_verification_pairs_are_the_upper_triangle_by_label() -> None:
    v = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]], np.float32)
    genuine, impostor = verification_pairs(v, np.array(["a", "b", "a"], dtype=object), "l2")
    assert genuine.tolist() == pytest.approx([1.0])
    assert sorted(impostor.tolist()) == pytest.approx([np.sqrt(18.0), 5.0])


def test_train_options_are_the_one_declaration_of_the_choices() -> None:
    config, encoder = TrainOptions(distance="cosine", margin=0.7, epochs=3, members=2).configs()
    assert (config.distance, config.margin, config.epochs, config.members) == (
        "cosine",
        0.7,
        3,
        2,
    )
    assert TrainOptions(arch="two-channel").configs()[0].loss == "bce"
    assert TrainOptions(backbone="chopra2005").configs()[1] != encoder
    with pytest.raises(ValueError, match="--arch"):
        TrainOptions(arch="triplet").configs()


def test_encoder_cache_loads_once_keeps_capacity_and_refuses_altered_checkpoints(
    rt: Runtime, model: str, tmp_path: Path
) -> None:
    ref = resolve_model(rt.sessions, model)
    cache = EncoderCache(capacity=1)
    first = cache.get(ref)
    assert cache.get(ref) is first and len(cache) == 1
    copy = tmp_path / "copy.pt"
    copy.write_bytes(Path(ref.checkpoint).read_bytes())
    other = ModelRef(ref.id, ref.name, str(copy), ref.checkpoint_sha256, ref.dim, "l2", 1.0)
    assert cache.get(other) is first  # the same checksum is the same encoder
    copy.write_bytes(b"tampered")
    altered = ModelRef(ref.id, ref.name, str(copy), "0" * 64, ref.dim, "l2", 1.0)
    with pytest.raises(ModelError, match="does not match its registered sha256"):
        cache.get(altered)
    assert len(cache) == 1
    with pytest.raises(ValueError):
        EncoderCache(capacity=0)


def test_publishing_steps_plan_build_publish(rt: Runtime, model: str) -> None:
    ref = resolve_model(rt.sessions, model)
    pending = embedding.pending_images(rt, ref)
    assert (len(pending.todo), pending.already_embedded) == (32, 0)
    for items in embedding.chunks(pending.todo, 20):
        assert embedding.embed_chunk(rt, ref, items, workers=0).embedded == len(items)

    plan = publishing.plan_index(rt, ref)
    assert plan.current is None and not plan.incremental and plan.live_ids.size == 32
    built = publishing.build_index(rt, plan)
    assert built.rebuilt and built.changed and built.added == 32
    first = publishing.publish(rt, plan, built)
    assert first.published and first.vectors == 32

    again = publishing.plan_index(rt, ref)
    assert again.incremental and again.current is not None
    assert again.current.id == first.index_version_id
    unchanged = publishing.publish(rt, again, publishing.build_index(rt, again))
    assert not unchanged.published and unchanged.index_version_id == first.index_version_id

    removed = remove_identity(rt, "person_0000")
    plan = publishing.plan_index(rt, ref)
    built = publishing.build_index(rt, plan)
    assert (built.rebuilt, built.removed, built.added) == (False, len(removed), 0)
    result = publishing.publish(rt, plan, built)
    assert result.published and result.vectors == 32 - len(removed)
