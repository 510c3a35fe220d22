"""Identify a photo and search an embedding over HTTP: the answers of `siamid identify --json`,
refusals with a reason for bad uploads, and the limits."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from pipelines.api.app import create_app
from pipelines.api.settings import ApiSettings
from pipelines.cli import app as cli
from pipelines.services.runtime import Runtime, open_runtime
from tests.api.support import Keys, Prepared, home_settings, state_of, wait_ready


def photo(prepared: Prepared, person: int, index: int = 0) -> Path:
    return prepared.gallery / f"person_{person:04d}" / f"{index:03d}.png"


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height pixels, with almost no data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def truncated_jpeg(source: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(source).convert("RGB").save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    return data[: len(data) // 2]


def identify(client: TestClient, keys: Keys, name: str, data: bytes, **params: object):  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/identify", headers=keys.read, files={"image": (name, data)}, params=params
    )


def test_identify_gives_the_command_lines_answer(
    client: TestClient, keys: Keys, prepared: Prepared, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = photo(prepared, 2, 1)
    r = identify(client, keys, "probe.png", probe.read_bytes())
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    assert face["box"] is None and face["probe"] == "probe.png"
    assert face["decision"] == "match" and face["identity"] == "person_0002"

    monkeypatch.setenv("SIAMID_HOME", str(home))
    monkeypatch.setenv("SIAMID_TORCH_THREADS", "1")
    monkeypatch.delenv("SIAMID_DATABASE_URL", raising=False)
    out = CliRunner().invoke(cli, ["identify", str(probe), "--json"])
    assert out.exit_code == 0, out.output
    expected = json.loads(out.stdout.strip().splitlines()[-1])
    assert {**face, "probe": str(probe)} == {"box": None, "face": None, **expected}


def test_search_an_embedding_answers_like_its_photo(
    client: TestClient, keys: Keys, prepared: Prepared
) -> None:
    probe = photo(prepared, 5, 2)
    ident = state_of(client).live.current()
    vector = ident.embed_paths([probe]).vectors[0]
    r = client.post("/v1/search", headers=keys.read, json={"embedding": vector.tolist()})
    assert r.status_code == 200, r.text
    answer = r.json()
    (face,) = identify(client, keys, "p.png", probe.read_bytes()).json()["faces"]
    assert answer["identity"] == "person_0005" and answer["probe"] == "embedding"
    assert answer["candidates"] == face["candidates"]
    assert {k: answer[k] for k in ("index_version", "model_version", "threshold")} == {
        k: face[k] for k in ("index_version", "model_version", "threshold")
    }

    top2 = client.post(
        "/v1/search", headers=keys.read, json={"embedding": vector.tolist(), "top_k": 2}
    ).json()
    assert top2["candidates"] == face["candidates"][:2]
    three = identify(client, keys, "p.png", probe.read_bytes(), top_k=3).json()["faces"][0]
    assert three["candidates"] == face["candidates"][:3]
    # The shared identifier is untouched by a request's top_k.
    assert (
        len(
            client.post(
                "/v1/search", headers=keys.read, json={"embedding": vector.tolist()}
            ).json()["candidates"]
        )
        == 5
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"embedding": [0.1] * 65}, "makes 64-dimensional"),
        ({"embedding": [0.1] * 3}, "has 3 numbers"),
        ({"embedding": []}, "embedding"),
        ({"embedding": [0.1] * 64, "top_k": 0}, "top_k"),
        ({"embedding": [0.1] * 64, "top_k": 101}, "top_k"),
        ({"embedding": "abc"}, "embedding"),
        ({}, "embedding"),
    ],
)
def test_search_refuses_bad_embeddings_with_a_reason(
    client: TestClient, keys: Keys, body: dict[str, object], reason: str
) -> None:
    assert client.get("/readyz").json()["embedding_dim"] == 64
    r = client.post("/v1/search", headers=keys.read, json=body)
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], str) and reason in r.json()["detail"]


def test_search_refuses_non_finite_numbers(client: TestClient, keys: Keys) -> None:
    raw = '{"embedding": [NaN' + ", 0.1" * 63 + "]}"
    r = client.post(
        "/v1/search", headers={**keys.read, "Content-Type": "application/json"}, content=raw
    )
    assert r.status_code == 422 and "finite" in r.json()["detail"]


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("renamed.jpg", lambda p: b"this is a text file, not a photo\n" * 3, "not_an_image"),
        ("cut.jpg", truncated_jpeg, "truncated"),
        ("bomb.png", lambda p: png_bomb(30_000, 30_000), "too_large"),
        ("empty.png", lambda p: b"", "empty"),
        ("tiny.png", lambda p: png_bomb(8, 8), "too_small"),
    ],
)
def test_bad_uploads_are_4xx_with_the_reason(
    client: TestClient,
    keys: Keys,
    prepared: Prepared,
    name: str,
    make,
    reason: str,  # type: ignore[no-untyped-def]
) -> None:
    r = identify(client, keys, name, make(photo(prepared, 1)))
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(reason)
    assert f'reason="{reason}"' in client.get("/metrics").text


def test_upload_limits_are_413(client: TestClient, keys: Keys) -> None:
    big = identify(client, keys, "big.png", b"\0" * 200_001)
    assert big.status_code == 413 and "200000 bytes" in big.json()["detail"]
    limit = ApiSettings(max_upload_bytes=200_000, max_files=4).max_request_bytes
    huge = identify(client, keys, "huge.png", b"\0" * (limit + 1))
    assert huge.status_code == 413 and f"larger than {limit} bytes" in huge.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    streamed = client.post(
        "/v1/search", headers={**keys.read, "Content-Type": "application/json"}, content=chunks()
    )
    assert streamed.status_code == 413, streamed.text
    missing = client.post("/v1/identify", headers=keys.read)
    assert missing.status_code == 422 and "image" in missing.json()["detail"]


def test_pixel_limit_comes_from_the_settings(
    home: Path, prepared: Prepared, api_settings: ApiSettings
) -> None:
    from pipelines.services.apikeys import create_api_key

    rt = open_runtime(home_settings(home, max_image_pixels=5_000))  # a 92x112 photo has 10,304
    token = create_api_key(rt.sessions, "read").token
    with TestClient(create_app(api_settings=api_settings, runtime=rt)) as c:
        wait_ready(c)
        r = c.post(
            "/v1/identify",
            headers={"X-API-Key": token},
            files={"image": ("p.png", photo(prepared, 0).read_bytes())},
        )
    rt.engine.dispose()
    assert r.status_code == 422 and "too_large" in r.json()["detail"] and "5000" in r.text


def test_not_ready_without_an_index(tmp_path: Path, api_settings: ApiSettings) -> None:
    from pipelines.services.apikeys import create_api_key

    rt: Runtime = open_runtime(home_settings(tmp_path / "empty"))
    token = create_api_key(rt.sessions, "read").token
    with TestClient(create_app(api_settings=api_settings, runtime=rt)) as c:
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "siamid embed" in ready.json()["detail"]
        r = c.post("/v1/search", headers={"X-API-Key": token}, json={"embedding": [0.0] * 4})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert "siamid_api_index_version 0.0" in c.get("/metrics").text
    rt.engine.dispose()


def test_metrics_count_requests_by_route_and_show_the_index(client: TestClient, keys: Keys) -> None:
    for name in ("person_0001", "nobody"):
        client.get(f"/v1/identities/{name}", headers=keys.read)
    text = client.get("/metrics").text
    assert (
        'siamid_api_requests_total{method="GET",route="/v1/identities/{name}",status="200"} 1.0'
        in text
    )
    assert 'route="/v1/identities/{name}",status="404"} 1.0' in text
    assert 'siamid_api_errors_total{kind="client",route="/v1/identities/{name}"} 1.0' in text
    assert "siamid_api_request_seconds_bucket" in text and "nobody" not in text
    version = state_of(client).live.current().index_version_id
    assert f"siamid_api_index_version {float(version)}" in text
