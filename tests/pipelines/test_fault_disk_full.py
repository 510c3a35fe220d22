"""Fault: the filesystem under SIAMID_HOME fills up during an embed, and during a publish.

SIAMID_HOME lies on a small tmpfs of its own (the database beside it, on another disk, as a
PostgreSQL server's would be); `siamid embed` runs through its command line in this process.
The filesystem is filled to leave room for exactly one vector shard (the run fails at its second
chunk), then for the run's shards but not its index file (it fails in the publish). Promised
each time: exit 2 with one ``error:`` line naming the full disk, the published index untouched,
the vector store valid, ``doctor`` finding nothing but the images still to publish; and once
space is back, the next run finishes the work and ``doctor`` is clean.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from index.vector_store import VectorStore
from pipelines.cli import main
from pipelines.services import doctor
from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.services.indexing import index_pending
from pipelines.services.runtime import Runtime, open_runtime
from pipelines.settings import Settings
from siamese.synthetic import generate_gallery
from storage.indexes import published_index
from storage.models import Embedding
from storage.registry import get_model_version
from tests.fault_support import fill, small_filesystem
from tests.pipelines.conftest import quick_model

pytestmark = pytest.mark.fault

CHUNK = 4
PAGE = 4096


def shard_pages(images: int, dim: int) -> int:
    """Pages of one vector shard on tmpfs: an int64 ids file and a float32 vectors file."""
    return math.ceil((128 + 8 * images) / PAGE) + math.ceil((128 + 4 * images * dim) / PAGE)


def error_line(err: str) -> str:
    return next((line for line in err.splitlines() if line.startswith("error:")), "")


def embed(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`siamid embed` through the command line's entry point: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["siamid", "embed", "--chunk-size", str(CHUNK)])
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    with capsys.disabled():
        print(f"  embed: exit {exited.value.code} in {time.monotonic() - t0:.1f} s")
    return int(exited.value.code or 0), err


def embed_on_full_disk(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mount: Path, when: str
) -> None:
    """`siamid embed` on the full disk: exit 2 with one ``error:`` line that names the file it
    could not write there, no traceback."""
    code, err = embed(monkeypatch, capsys)
    with capsys.disabled():
        print(f"\nFAULT disk-full during {when}: exit {code}; {error_line(err)}")
    assert code == 2 and "error: no space left on device writing " in err, err
    assert str(mount) in err.split("error:")[1], err  # names the file on the full disk
    assert "Traceback" not in err, err


def embed_with_room(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], filler: Path
) -> None:
    """Space is back (``filler`` removed): `siamid embed` finishes the work."""
    filler.unlink()
    code, err = embed(monkeypatch, capsys)
    assert code == 0, err


def state(rt: Runtime) -> tuple[int, int, int]:
    """(embeddings in SQL, published index version, its vector count)."""
    with rt.sessions() as s:
        vectors = s.scalar(select(func.count()).select_from(Embedding)) or 0
        row = published_index(session=s)
        assert row is not None
        return vectors, row.id, row.vector_count


def only_pending(rt: Runtime, pending: int) -> None:
    """Doctor: the published index loads and matches its record; SQL is ahead by ``pending``."""
    report = doctor.diagnose(rt)
    assert report.counts["index_vectors"] == report.counts["recorded_vectors"], report.as_dict()
    assert not report.index_only_ids and len(report.sql_only_ids) == pending, report.as_dict()
    assert len(report.problems) == (1 if pending else 0), report.problems


def test_disk_full_during_embed_and_publish(
    prefect_harness: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with small_filesystem(tmp_path / "small", "48m") as mount:
        monkeypatch.setenv("SIAMID_HOME", str(mount / "home"))
        monkeypatch.setenv("SIAMID_DATABASE_URL", f"sqlite:///{tmp_path / 'siamid.db'}")
        rt = open_runtime(Settings())
        for n, (people, first) in enumerate(((6, 0), (5, 100), (2, 200))):
            generate_gallery(
                tmp_path / f"g{n}", identities=people, per_identity=3, seed=n, first_identity=first
            )
        import_items(scan_image_folder(tmp_path / "g0"), sessions=rt.sessions)
        name = quick_model(rt)
        index_pending(rt, name, workers=0)  # the first version, published with room to spare
        first = state(rt)
        with rt.sessions() as s:
            mv = get_model_version(session=s, ref=name)
            dim = mv.embedding_dim
        store = VectorStore(rt.settings.vector_store_dir(mv.id), dim)

        # 1. during the embed: room for one shard of 4 images, and one page more
        import_items(scan_image_folder(tmp_path / "g1"), sessions=rt.sessions)  # 15 images
        filler = fill(mount, leave_bytes=(shard_pages(CHUNK, dim) + 1) * PAGE)
        embed_on_full_disk(monkeypatch, capsys, mount, "embed")
        vectors, version, count = state(rt)
        assert (version, count) == first[1:], "the published index changed"
        assert vectors == first[0] + CHUNK, "the chunk done before the disk filled is kept"
        assert store.validate().ok, store.validate()
        only_pending(rt, CHUNK)
        embed_with_room(monkeypatch, capsys, filler)
        second = state(rt)
        assert second[0] == second[2] == first[0] + 15 and second[1] > first[1]
        only_pending(rt, 0)

        # 2. during the publish: room for the run's two shards, not for its index file
        import_items(scan_image_folder(tmp_path / "g2"), sessions=rt.sessions)  # 6 images
        filler = fill(mount, leave_bytes=(2 * shard_pages(CHUNK, dim) + 1) * PAGE)
        embed_on_full_disk(monkeypatch, capsys, mount, "publish")
        vectors, version, count = state(rt)
        assert (version, count) == second[1:] and vectors == second[0] + 6
        assert store.validate().ok
        assert not [p for p in rt.settings.indexes_dir.iterdir() if p.name.startswith(".")]
        only_pending(rt, 6)
        embed_with_room(monkeypatch, capsys, filler)
        third = state(rt)
        assert third[0] == third[2] == second[0] + 6 and third[1] > second[1]
        only_pending(rt, 0)
        rt.engine.dispose()
