"""Importing a corpus of awkward files: each ends accepted or rejected with its reason."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from pipelines import migrations
from pipelines.cli import app
from pipelines.services.gallery import GalleryError, import_items, read_manifest, scan_image_folder
from siamese.images import DecodeLimits
from storage.db import make_engine, session_factory
from storage.models import FaceImage, Identity, ImageConflict

NAMES = {
    "accents": "José Müller-Åström",
    "cjk": "王小明",
    "spaces": "Jane  Q. Doe",
    "quotes": 'O\'Brien "Bob"',
    "sqli": "Robert'); DROP TABLE identity;--",
}


def _face(size: tuple[int, int] = (48, 56), seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def _png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims 10^10 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def build_corpus(root: Path) -> dict[str, tuple[str, str | None]]:
    """Write the awkward corpus; returns relative path -> (expected status, expected reason)."""
    expected: dict[str, tuple[str, str | None]] = {}

    def put(identity: str, name: str, data: bytes, status: str, reason: str | None) -> None:
        path = root / identity / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[f"{identity}/{name}"] = (status, reason)

    jpeg = _save(_face(seed=1), "JPEG", quality=90)
    put(NAMES["accents"], "truncated.jpg", jpeg[: len(jpeg) // 2], "rejected", "truncated")
    put(NAMES["accents"], "zero.jpg", b"", "rejected", "empty")
    put(NAMES["accents"], "text.jpg", b"this is not a picture\n" * 20, "rejected", "not_an_image")
    put(
        NAMES["accents"],
        "garbage.png",
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
        "rejected",
        "not_an_image",
    )
    put(NAMES["accents"], "bomb.png", _png_bomb(), "rejected", "too_large")
    put(NAMES["accents"], "tiny.png", _save(_face((1, 1)), "PNG"), "rejected", "too_small")
    put(
        NAMES["accents"],
        "float.tif",
        _save(_face(seed=9).convert("F"), "TIFF"),
        "rejected",
        "unsupported_mode",
    )
    put(NAMES["accents"], "notes.txt", b"hello", "rejected", "unsupported_extension")

    put(NAMES["cjk"], "cmyk.jpg", _save(_face(seed=2).convert("CMYK"), "JPEG"), "accepted", None)
    sixteen = Image.fromarray(
        (np.arange(48 * 56, dtype=np.uint16).reshape(56, 48) * 20).astype(np.uint16)
    )
    put(NAMES["cjk"], "sixteen.png", _save(sixteen, "PNG"), "accepted", None)
    pal = _face(seed=3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    put(NAMES["cjk"], "palette.png", _save(pal, "PNG", transparency=0), "accepted", None)
    put(NAMES["cjk"], "rgba.png", _save(_face(seed=4).convert("RGBA"), "PNG"), "accepted", None)

    rotated = _face((40, 60), seed=5)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    put(NAMES["spaces"], "exif.jpg", _save(rotated, "JPEG", exif=exif.tobytes()), "accepted", None)
    put(NAMES["spaces"], "face.bmp", _save(_face(seed=6), "BMP"), "accepted", None)
    put(NAMES["quotes"], "face.webp", _save(_face(seed=7), "WEBP", lossless=True), "accepted", None)
    put(NAMES["quotes"], "face.tiff", _save(_face(seed=8), "TIFF"), "accepted", None)
    put(NAMES["sqli"], "UPPER.JPG", _save(_face(seed=10), "JPEG"), "accepted", None)
    put(NAMES["sqli"], "grey.pgm", _save(_face(seed=11, mode="L"), "PPM"), "accepted", None)
    return expected


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sessions(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'g.db'}"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    migrations.upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


def _rows(sessions) -> dict[str, FaceImage]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return {img.source_uri: img for img in s.scalars(select(FaceImage))}


def _count(sessions) -> int:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(FaceImage)))


def test_awkward_corpus_each_file_as_it_should(tmp_path: Path, sessions) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "gallery"
    expected = build_corpus(root)
    summary = import_items(scan_image_folder(root), sessions=sessions, limits=DecodeLimits())
    rows = _rows(sessions)
    assert summary.seen == len(expected)
    for rel, (status, reason) in expected.items():
        row = rows[str((root / rel).resolve())]
        assert (row.status, row.reject_reason) == (status, reason), rel
        if status == "rejected":
            assert row.reject_detail
    exif_row = rows[str((root / NAMES["spaces"] / "exif.jpg").resolve())]
    assert (exif_row.width, exif_row.height) == (60, 40)  # EXIF orientation applied
    modes = {Path(r.source_uri).name: r.mode for r in rows.values() if r.status == "accepted"}
    assert modes["cmyk.jpg"] == "CMYK" and modes["sixteen.png"].startswith("I")
    assert modes["palette.png"] == "P" and modes["rgba.png"] == "RGBA"
    n_rejected = sum(1 for s, _ in expected.values() if s == "rejected")
    assert summary.rejected == n_rejected
    assert summary.new == len(expected) - n_rejected
    assert sum(summary.rejected_by_reason.values()) == n_rejected

    with sessions() as s:
        names = set(s.scalars(select(Identity.name)))
    assert names == set(NAMES.values())  # exact round trip, injection included

    again = import_items(scan_image_folder(root), sessions=sessions, limits=DecodeLimits())
    assert (again.new, again.duplicates, again.rejected) == (0, summary.new, n_rejected)
    assert _count(sessions) == len(expected)  # re-running adds nothing


def test_same_bytes_under_two_identities_is_a_conflict(tmp_path: Path, sessions) -> None:  # type: ignore[no-untyped-def]
    data = _save(_face(seed=42), "PNG")
    for person in ("alice", "bob"):
        (tmp_path / "g" / person).mkdir(parents=True)
        (tmp_path / "g" / person / "same.png").write_bytes(data)
    (tmp_path / "g" / "alice" / "copy.png").write_bytes(data)
    summary = import_items(scan_image_folder(tmp_path / "g"), sessions=sessions)
    assert (summary.new, summary.duplicates, summary.conflicts) == (1, 1, 1)
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(FaceImage)) == 1
        conflict = s.scalars(select(ImageConflict)).one()
        bob = s.scalars(select(Identity).where(Identity.name == "bob")).one()
        assert conflict.claimed_identity_id == bob.id


def test_manifest_outside_paths_and_missing(tmp_path: Path, sessions) -> None:  # type: ignore[no-untyped-def]
    base = tmp_path / "set"
    (base / "img").mkdir(parents=True)
    (base / "img" / "a.png").write_bytes(_save(_face(seed=1), "PNG"))
    outside = tmp_path / "outside.png"
    outside.write_bytes(_save(_face(seed=2), "PNG"))
    manifest = base / "m.csv"
    manifest.write_text(
        "path,identity\n"
        "img/a.png,alice\n"
        "../outside.png,bob\n"
        f"{outside},carol\n"
        "img/missing.png,dave\n"
        "img/a.png,\n",
        encoding="utf-8",
    )
    summary = import_items(read_manifest(manifest), sessions=sessions)
    assert summary.new == 1
    assert dict(summary.rejected_by_reason) == {"outside_root": 2, "missing": 1, "no_identity": 1}
    again = import_items(read_manifest(manifest), sessions=sessions)
    assert (
        again.new == 0 and again.rejected == 4 and _count(sessions) == 4
    )  # both outside paths are one file

    allowed = import_items(read_manifest(manifest, allow_outside=True), sessions=sessions)
    assert allowed.new == 1  # the outside file, for bob; carol's copy is the same bytes
    assert allowed.conflicts == 1


def test_bad_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(GalleryError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    bad = tmp_path / "m.csv"
    bad.write_text("file,person\nx.png,a\n")
    with pytest.raises(GalleryError, match="path, identity|identity, path|lacks the column"):
        read_manifest(bad)


def test_cli_import_json_exit_zero(tmp_path: Path, siamid_home: Path) -> None:
    root = tmp_path / "gallery"
    expected = build_corpus(root)
    runner = CliRunner()
    result = runner.invoke(app, ["gallery", "import", str(root), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["seen"] == len(expected)
    assert out["rejected_by_reason"]["truncated"] == 1
    listing = runner.invoke(app, ["gallery", "show", NAMES["sqli"], "--json"])
    assert listing.exit_code == 0, listing.output
    shown = json.loads(listing.stdout.strip().splitlines()[-1])
    assert shown["name"] == NAMES["sqli"] and len(shown["images"]) == 2
    # the CLI shows the service's view that the API's schema is built from: every API field
    from pipelines.api.schemas import Identity, Image

    assert set(Identity.model_fields) <= set(shown)
    assert all(set(Image.model_fields) <= set(im) and im["source"] for im in shown["images"])
    removed = runner.invoke(app, ["gallery", "remove", NAMES["sqli"], "--json"])
    assert removed.exit_code == 0
    assert json.loads(removed.stdout.strip().splitlines()[-1])["removed_images"] == 2
    listed = runner.invoke(app, ["gallery", "list", "--json"])
    names = {i["name"] for i in json.loads(listed.stdout.strip().splitlines()[-1])["identities"]}
    assert NAMES["sqli"] not in names and NAMES["cjk"] in names

    # A second import's summary counts its own photos, not every detection stored before.
    more = tmp_path / "more" / "Newcomer"
    more.mkdir(parents=True)
    for seed in (101, 102):
        _face(seed=seed).save(more / f"{seed}.png")
    second = runner.invoke(app, ["gallery", "import", str(more.parent), "--json"])
    assert second.exit_code == 0, second.output
    faces = json.loads(second.stdout.strip().splitlines()[-1])["faces"]
    assert faces["detected"] == 2 and sum(faces["outcomes"].values()) == 2, faces


@pytest.mark.att
def test_att_faces_import_and_reimport(att_faces: Path, tmp_path: Path, sessions) -> None:  # type: ignore[no-untyped-def]
    first = import_items(scan_image_folder(att_faces), sessions=sessions)
    assert (first.new, first.rejected) == (400, 0)
    second = import_items(scan_image_folder(att_faces), sessions=sessions)
    assert (second.new, second.duplicates) == (0, 400)
