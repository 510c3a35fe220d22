"""Durable, append-only store of embedding vectors for one model version.

Why: the FAISS index is derived data. Keeping the raw float32 embeddings lets us rebuild or
re-structure the index (Flat -> IVF as the gallery grows, after corruption, after a faiss
upgrade) without running the model over every image again.

Layout of ``root`` (one folder per model version)::

    store.json                       {"format": 1, "dim": 512, "dtype": "float32"}
    shard-<time_ns>-<uuid12>.ids.npy      int64 (n,)       ids given by the writer
    shard-<time_ns>-<uuid12>.f32.npy      float32 (n, dim) the vectors, row i <-> ids[i]
    .<file>.tmp-<uuid>                    in-flight writes (ignored, garbage-collected)

A vector is addressed by the ref ``"<shard-name>#<row>"``, stored by SQL in
``embedding.vector_ref``. Crash safety:

* Each file is written to a tmp file in the same folder, fsynced and hard-linked into place
  (``link`` fails instead of overwriting, so a committed shard is never rewritten).
* The ids file is committed first and the vectors file last: the vectors file is the commit
  marker, so a crash in between leaves an "incomplete" shard that listing ignores.
* Shards are written *before* the SQL transaction that references them commits. A crash
  after the shard but before the commit leaves an orphan shard: find it with
  :meth:`VectorStore.find_orphans` and delete it with :meth:`VectorStore.remove_shards`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._fs import commit_tmp, fsync_dir, is_tmp_name, tmp_path_for, unlink_quiet
from .errors import (
    DimensionMismatchError,
    InvalidInputError,
    ShardCorruptError,
    VectorRefError,
    VectorStoreError,
)

logger = logging.getLogger(__name__)

__all__ = ["VectorStore", "Shard", "ShardProblem", "StoreReport", "parse_ref", "make_ref"]

MANIFEST = "store.json"
FORMAT_VERSION = 1
VECTORS_SUFFIX = ".f32.npy"
IDS_SUFFIX = ".ids.npy"
REF_SEP = "#"
_SHARD_RE = re.compile(r"^shard-\d{20}-[0-9a-f]{12}$")
#: Default grace period before partial files / unreferenced shards count as garbage: a
#: writer may legitimately be between "shard written" and "SQL committed" right now.
DEFAULT_GRACE_S = 3600.0


def make_ref(shard: str, row: int) -> str:
    return f"{shard}{REF_SEP}{row}"


def parse_ref(ref: str) -> tuple[str, int]:
    """Split ``"<shard>#<row>"``; raises :class:`VectorRefError` if malformed."""
    if not isinstance(ref, str):
        raise VectorRefError(f"vector ref must be a str, got {type(ref).__name__}")
    name, sep, row = ref.partition(REF_SEP)
    # The name check also stops refs read back from SQL from escaping the store folder.
    if not sep or not _SHARD_RE.match(name) or not row.isdigit():
        raise VectorRefError(
            f"malformed vector ref {ref!r}; expected '<shard-name>{REF_SEP}<row>' "
            "as returned by VectorStore.write_shard"
        )
    return name, int(row)


@dataclass(frozen=True)
class Shard:
    """One committed shard: ``ids[i]`` is the id of ``vectors[i]`` (a read-only memmap)."""

    name: str
    ids: np.ndarray
    vectors: np.ndarray

    def refs(self) -> list[str]:
        return [make_ref(self.name, i) for i in range(len(self.ids))]


@dataclass(frozen=True)
class ShardProblem:
    """A finding of :meth:`VectorStore.validate`.

    ``kind``: ``corrupt`` / ``dim_mismatch`` / ``dtype`` / ``non_finite`` / ``length_mismatch``
    / ``missing_ids`` are errors; ``incomplete`` (ids without vectors, from a crash) and
    ``tmp_leftover`` are harmless crash debris removed by :meth:`VectorStore.clean_partial`.
    """

    name: str
    kind: str
    message: str

    @property
    def is_error(self) -> bool:
        return self.kind not in ("incomplete", "tmp_leftover")


@dataclass
class StoreReport:
    shards_checked: int = 0
    vectors_checked: int = 0
    problems: list[ShardProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.is_error for p in self.problems)

    @property
    def errors(self) -> list[ShardProblem]:
        return [p for p in self.problems if p.is_error]


class VectorStore:
    """Append-only float32 shards for one model version, addressed by string refs."""

    def __init__(self, root: str | os.PathLike[str], dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        self._root = Path(root)
        self._dim = int(dim)
        self._check_manifest()

    @property
    def root(self) -> Path:
        return self._root

    @property
    def dim(self) -> int:
        return self._dim

    def __repr__(self) -> str:
        return f"VectorStore(root={str(self._root)!r}, dim={self._dim})"

    # ------------------------------------------------------------------ writing

    def write_shard(self, ids: np.ndarray, vectors: np.ndarray) -> list[str]:
        """Durably write one new shard and return one ref per row (in row order).

        When this returns, the shard is fsynced and visible; only then commit the SQL rows
        holding the refs. An empty batch writes nothing and returns ``[]``.
        """
        vectors = self._check_vectors(vectors)
        if not isinstance(ids, np.ndarray) or ids.dtype != np.int64 or ids.ndim != 1:
            raise InvalidInputError(
                "ids must be a 1-D int64 numpy array; convert with np.asarray(ids, np.int64)"
            )
        if len(ids) != len(vectors):
            raise InvalidInputError(f"got {len(vectors)} vectors but {len(ids)} ids")
        if len(ids) == 0:
            return []
        self._root.mkdir(parents=True, exist_ok=True)
        self._ensure_manifest()
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        # Order matters: vectors last = commit marker (see module docstring).
        self._write_npy(self._ids_path(name), np.ascontiguousarray(ids))
        try:
            self._write_npy(self._vec_path(name), np.ascontiguousarray(vectors))
        except BaseException:
            unlink_quiet(self._ids_path(name))  # tidy up; a crash here is cleaned later
            raise
        logger.info("wrote vector shard %s (%d x %d) in %s", name, *vectors.shape, self._root)
        return [make_ref(name, i) for i in range(len(ids))]

    def _write_npy(self, final: Path, arr: np.ndarray) -> None:
        tmp = tmp_path_for(final)
        try:
            with open(tmp, "xb") as f:
                np.save(f, arr, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            commit_tmp(tmp, final, overwrite=False)
        except FileExistsError as exc:
            raise VectorStoreError(
                f"refusing to overwrite existing shard file {final}; shards are immutable"
            ) from exc
        except OSError as exc:
            unlink_quiet(tmp)
            if exc.filename is None:  # a failed write names no file: name the shard's
                raise OSError(exc.errno, exc.strerror, str(final)) from exc
            raise
        except BaseException:
            unlink_quiet(tmp)
            raise

    # ------------------------------------------------------------------ reading

    def read(self, refs: Sequence[str]) -> np.ndarray:
        """Vectors for ``refs`` as a new float32 (len(refs), dim) array, in ref order.

        Rows are gathered shard by shard from read-only memmaps, so only the pages of the
        requested rows are touched.
        """
        out = np.empty((len(refs), self._dim), dtype=np.float32)
        by_shard: dict[str, tuple[list[int], list[int]]] = {}
        for pos, ref in enumerate(refs):
            # parse_ref's checks, each shard name matched once (a million refs in ~0.5 s)
            name, sep, row = ref.partition(REF_SEP) if type(ref) is str else ("", "", "")
            lists = by_shard.get(name)
            if lists is None or not sep or not row.isdigit():
                name, _ = parse_ref(ref)  # raises for a malformed ref
                lists = by_shard.setdefault(name, ([], []))
            lists[0].append(pos)
            lists[1].append(int(row))
        for name, (positions, rows) in by_shard.items():
            vectors = self._open_vectors(name)
            row_arr = np.asarray(rows, dtype=np.int64)
            too_big = row_arr >= vectors.shape[0]
            if too_big.any():
                bad = refs[positions[int(np.flatnonzero(too_big)[0])]]
                raise VectorRefError(
                    f"vector ref {bad!r} points past the end of shard {name} "
                    f"({vectors.shape[0]} rows); the SQL row is inconsistent with the store"
                )
            out[np.asarray(positions)] = vectors[row_arr]
        return out

    def read_shard(self, name: str) -> Shard:
        """One committed shard (ids in memory, vectors as a read-only memmap)."""
        self._check_name(name)
        vectors = self._open_vectors(name)
        ids = self._open_ids(name)
        if len(ids) != len(vectors):
            raise ShardCorruptError(
                f"shard {name} in {self._root} has {len(ids)} ids but {len(vectors)} vectors; "
                "delete it with remove_shards() and re-embed its images"
            )
        return Shard(name=name, ids=np.array(ids), vectors=vectors)

    def iter_shards(self) -> Iterator[Shard]:
        """All committed shards, oldest first (e.g. to rebuild an index)."""
        for name in self.shard_names():
            yield self.read_shard(name)

    def shard_names(self) -> list[str]:
        """Names of committed shards (vectors file present), oldest first."""
        if not self._root.is_dir():
            return []
        names = [
            entry.name[: -len(VECTORS_SUFFIX)]
            for entry in os.scandir(self._root)
            if entry.name.endswith(VECTORS_SUFFIX) and not is_tmp_name(entry.name)
        ]
        return sorted(n for n in names if _SHARD_RE.match(n))

    def __len__(self) -> int:
        return len(self.shard_names())

    # ------------------------------------------------------------------ garbage collection

    def find_orphans(
        self, referenced: Iterable[str], *, min_age_s: float = DEFAULT_GRACE_S
    ) -> list[str]:
        """Committed shards not referenced by SQL and older than ``min_age_s`` seconds.

        ``referenced`` may hold shard names or full refs (``embedding.vector_ref`` values).
        The age guard keeps shards whose SQL transaction is still in flight.
        """
        wanted = {r.partition(REF_SEP)[0] for r in referenced}
        cutoff = time.time() - min_age_s
        orphans = []
        for name in self.shard_names():
            if name in wanted:
                continue
            try:
                mtime = self._vec_path(name).stat().st_mtime
            except FileNotFoundError:  # removed concurrently
                continue
            if mtime <= cutoff:
                orphans.append(name)
        return orphans

    def remove_shards(self, names: Iterable[str]) -> list[str]:
        """Delete shards (committed or incomplete); unknown names are skipped.

        Only call this for shards no SQL row references (see :meth:`find_orphans`). The
        vectors file goes first so a crash mid-way leaves an "incomplete" shard, not a
        committed one without ids.
        """
        removed = []
        for name in names:
            self._check_name(name)
            vec, ids = self._vec_path(name), self._ids_path(name)
            existed = vec.exists() or ids.exists()
            unlink_quiet(vec)
            unlink_quiet(ids)
            if existed:
                removed.append(name)
        if removed:
            fsync_dir(self._root)
            logger.info("removed %d vector shards from %s: %s", len(removed), self._root, removed)
        return removed

    def clean_partial(self, *, min_age_s: float = DEFAULT_GRACE_S) -> list[Path]:
        """Delete crash debris older than ``min_age_s``: tmp files and incomplete shards."""
        if not self._root.is_dir():
            return []
        cutoff = time.time() - min_age_s
        committed = set(self.shard_names())
        removed = []
        for entry in os.scandir(self._root):
            debris = is_tmp_name(entry.name) or (
                entry.name.endswith(IDS_SUFFIX) and entry.name[: -len(IDS_SUFFIX)] not in committed
            )
            if not debris:
                continue
            try:
                if entry.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            unlink_quiet(Path(entry.path))
            removed.append(Path(entry.path))
        if removed:
            fsync_dir(self._root)
            logger.info("cleaned %d partial files in %s", len(removed), self._root)
        return removed

    # ------------------------------------------------------------------ validation

    def validate(self, *, deep: bool = False) -> StoreReport:
        """Check every shard's header (dtype, shape, dim, ids length) and readability.

        ``deep=True`` also reads all values and flags NaN/inf. Never raises for a bad shard:
        problems are collected in the returned :class:`StoreReport`.
        """
        report = StoreReport()
        if not self._root.is_dir():
            return report
        committed = self.shard_names()
        for name in committed:
            report.shards_checked += 1
            problem = self._check_shard(name, deep)
            if problem is not None:
                report.problems.append(problem)
            else:
                report.vectors_checked += int(self._open_ids(name).shape[0])
        committed_set = set(committed)
        for entry in os.scandir(self._root):
            if is_tmp_name(entry.name):
                report.problems.append(
                    ShardProblem(entry.name, "tmp_leftover", "interrupted write; clean_partial()")
                )
            elif entry.name.endswith(IDS_SUFFIX):
                name = entry.name[: -len(IDS_SUFFIX)]
                if name not in committed_set:
                    report.problems.append(
                        ShardProblem(name, "incomplete", "ids without vectors; clean_partial()")
                    )
        return report

    def _check_shard(self, name: str, deep: bool) -> ShardProblem | None:
        vec_path, ids_path = self._vec_path(name), self._ids_path(name)
        if not ids_path.exists():
            return ShardProblem(name, "missing_ids", f"{ids_path} is missing")
        try:
            vectors = np.load(vec_path, mmap_mode="r", allow_pickle=False)
            ids = np.load(ids_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            return ShardProblem(name, "corrupt", f"unreadable: {exc}")
        if vectors.dtype != np.float32 or ids.dtype != np.int64:
            return ShardProblem(
                name, "dtype", f"dtypes {vectors.dtype}/{ids.dtype}, expected float32/int64"
            )
        if vectors.ndim != 2 or vectors.shape[1] != self._dim:
            return ShardProblem(
                name, "dim_mismatch", f"vectors shape {vectors.shape}, expected (n, {self._dim})"
            )
        if ids.ndim != 1 or ids.shape[0] != vectors.shape[0]:
            return ShardProblem(
                name, "length_mismatch", f"{ids.shape} ids for {vectors.shape[0]} vectors"
            )
        if deep:
            try:
                finite = bool(np.isfinite(vectors).all())
            except (OSError, ValueError) as exc:  # truncated file surfaces on access
                return ShardProblem(name, "corrupt", f"unreadable data: {exc}")
            if not finite:
                return ShardProblem(name, "non_finite", "contains NaN/inf values")
        return None

    # ------------------------------------------------------------------ internals

    def _vec_path(self, name: str) -> Path:
        return self._root / f"{name}{VECTORS_SUFFIX}"

    def _ids_path(self, name: str) -> Path:
        return self._root / f"{name}{IDS_SUFFIX}"

    @staticmethod
    def _check_name(name: str) -> None:
        if not isinstance(name, str) or not _SHARD_RE.match(name):
            raise VectorRefError(f"invalid shard name {name!r}; names come from shard_names()")

    def _open_vectors(self, name: str) -> np.ndarray:
        path = self._vec_path(name)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as exc:
            raise VectorRefError(
                f"vector shard {name} does not exist in {self._root}; the SQL rows referring "
                "to it are dangling: re-embed their images (`siamid doctor --repair`)"
            ) from exc
        except (OSError, ValueError) as exc:
            raise ShardCorruptError(
                f"vector shard file {path} is unreadable ({exc}); remove it with "
                "remove_shards() and re-embed its images (`siamid doctor --repair`)"
            ) from exc
        if arr.ndim != 2 or arr.shape[1] != self._dim:
            raise DimensionMismatchError(
                f"vector shard {path} has shape {arr.shape} but this store expects "
                f"(n, {self._dim}); it belongs to another model version",
                expected=self._dim,
                got=int(arr.shape[1]) if arr.ndim == 2 else None,
            )
        if arr.dtype != np.float32:
            raise ShardCorruptError(f"vector shard {path} has dtype {arr.dtype}, not float32")
        return arr

    def _open_ids(self, name: str) -> np.ndarray:
        path = self._ids_path(name)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ShardCorruptError(
                f"ids file {path} of shard {name} is missing or unreadable ({exc}); "
                "remove the shard with remove_shards() and re-embed its images"
            ) from exc
        if arr.dtype != np.int64 or arr.ndim != 1:
            raise ShardCorruptError(f"ids file {path} is not a 1-D int64 array")
        return arr

    def _check_vectors(self, vectors: Any) -> np.ndarray:
        if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float32:
            got = vectors.dtype if isinstance(vectors, np.ndarray) else type(vectors).__name__
            raise InvalidInputError(
                f"vectors must be a float32 numpy array, got {got}; "
                "convert with np.asarray(x, dtype=np.float32)"
            )
        if vectors.ndim != 2 or vectors.shape[1] != self._dim:
            got_dim = vectors.shape[1] if vectors.ndim == 2 else None
            raise DimensionMismatchError(
                f"vectors have shape {vectors.shape} but the store at {self._root} holds "
                f"{self._dim}-dimensional vectors; use the store of the model version that "
                "produced these embeddings",
                expected=self._dim,
                got=got_dim,
            )
        if not np.isfinite(vectors).all():
            raise InvalidInputError("vectors contain NaN/inf values; refusing to store them")
        return vectors

    def _manifest_path(self) -> Path:
        return self._root / MANIFEST

    def _check_manifest(self) -> None:
        path = self._manifest_path()
        if not path.exists():
            return
        try:
            meta = json.loads(path.read_text())
            stored_dim = int(meta["dim"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VectorStoreError(
                f"vector store manifest {path} is unreadable ({exc}); restore it as "
                f'{{"format": {FORMAT_VERSION}, "dim": <model dim>, "dtype": "float32"}}'
            ) from exc
        if stored_dim != self._dim:
            raise DimensionMismatchError(
                f"vector store {self._root} holds {stored_dim}-dimensional vectors but "
                f"{self._dim} was requested; open the store of the matching model version",
                expected=self._dim,
                got=stored_dim,
            )

    def _ensure_manifest(self) -> None:
        path = self._manifest_path()
        if path.exists():
            return
        tmp = tmp_path_for(path)
        meta = {"format": FORMAT_VERSION, "dim": self._dim, "dtype": "float32"}
        try:
            with open(tmp, "x") as f:
                json.dump(meta, f)
                f.flush()
                os.fsync(f.fileno())
            commit_tmp(tmp, path, overwrite=False)
        except FileExistsError:
            self._check_manifest()  # a concurrent writer created it first: must agree
        except BaseException:
            unlink_quiet(tmp)
            raise
