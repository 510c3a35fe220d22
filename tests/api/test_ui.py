"""The web console without a browser (TestClient): the session cookie's flags, CSRF and
origin checks, scopes, thumbnails only for a session, escaping, and --no-ui."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipelines.api.app import create_app
from pipelines.api.settings import ApiSettings
from pipelines.api.ui.session import COOKIE, SessionSigner
from pipelines.services.runtime import Runtime
from tests.api.support import Keys, Prepared

HOSTILE = "<img src=x onerror=alert(1)>"


def sign_in(client: TestClient, headers: dict[str, str]) -> str:
    """Sign in with the key of ``headers``; the CSRF token of the session."""
    r = client.post("/ui/signin", data={"key": headers["X-API-Key"]}, follow_redirects=False)
    assert r.status_code == 303, r.text
    page = client.get("/ui/gallery")
    assert page.status_code == 200
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert token is not None
    return token.group(1)


def test_session_cookie_is_signed_httponly_strict_and_expiring(
    client: TestClient, keys: Keys
) -> None:
    r = client.post("/ui/signin", data={"key": keys.read["X-API-Key"]}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/gallery"
    cookie = r.headers["set-cookie"]
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "max-age", "path"} <= flags, cookie
    assert "samesite=strict" in cookie.lower() and "path=/ui" in cookie.lower()
    value = client.cookies[COOKIE]
    assert (
        keys.read["X-API-Key"] not in value and keys.read["X-API-Key"] not in r.headers["location"]
    )
    # A cookie with its payload changed (another key id) is not a session.
    payload, sig = value.split(".")
    client.cookies.set(COOKIE, payload[:-2] + "xx." + sig, path="/ui")
    assert client.get("/ui/gallery", follow_redirects=False).status_code == 303


def test_expired_or_forged_sessions_are_refused() -> None:
    signer = SessionSigner(b"k" * 32, ttl_seconds=60)
    cookie, data = signer.issue(3, "siamid_abcd1234", now=1000.0)
    assert signer.read(cookie, now=1059.0) == data
    assert signer.read(cookie, now=1061.0) is None  # expired
    assert SessionSigner(b"j" * 32, 60).read(cookie, now=1001.0) is None  # another secret
    assert signer.csrf_ok(data, signer.csrf(data)) and not signer.csrf_ok(data, "nope")


def test_unknown_key_does_not_sign_in(client: TestClient) -> None:
    r = client.post("/ui/signin", data={"key": "siamid_00000000_nothing"}, follow_redirects=False)
    assert r.status_code == 401 and COOKIE not in r.headers.get("set-cookie", "")


def test_pages_without_a_session_redirect_to_sign_in(client: TestClient) -> None:
    for page in (
        "/ui/",
        "/ui/gallery",
        "/ui/person?name=x",
        "/ui/enrol",
        "/ui/identify",
        "/ui/system",
    ):
        r = client.get(page, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/signin"), page
    signin = client.get("/ui/signin")
    assert signin.status_code == 200 and 'type="password" name="key"' in signin.text


def test_thumbnails_only_for_a_session(client: TestClient, keys: Keys, rt: Runtime) -> None:
    from storage.images import labelled_images

    with rt.sessions() as s:
        first = labelled_images(session=s)[0][0]
        from storage.images import get_image

        sha = get_image(session=s, image_id=first).sha256
    url = f"/ui/thumbs/{sha}.jpg?size=96"
    assert client.get(url).status_code == 401
    sign_in(client, keys.read)
    r = client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content[:2] == b"\xff\xd8"
    assert client.get("/ui/thumbs/" + "0" * 64 + ".jpg").status_code == 404
    assert client.get("/ui/thumbs/..%2F..%2Fsiamid.db.jpg").status_code == 404


def test_writes_need_the_csrf_token_and_a_write_key(client: TestClient, keys: Keys) -> None:
    token = sign_in(client, keys.read)
    # A read key may look but not create keys (nor enrol, nor remove).
    r = client.post("/ui/keys", data={"csrf": token, "scope": "read"})
    assert r.status_code == 403 and "needs a write key" in r.text
    r = client.post("/ui/person/remove", data={"csrf": token, "name": "person_0000"})
    assert r.status_code == 403

    photo = {"image": ("p.png", b"not even an image")}
    assert client.post("/ui/identify", files=photo).status_code == 403  # no CSRF header
    r = client.post("/ui/identify", files=photo, headers={"X-CSRF-Token": token})
    assert r.status_code == 422 and "not a recognised image" in r.json()["detail"]

    token = sign_in(client, keys.write)
    assert client.post("/ui/keys", data={"scope": "read"}).status_code == 403  # no token
    assert client.post("/ui/keys", data={"csrf": "forged", "scope": "read"}).status_code == 403
    evil = client.post(
        "/ui/keys",
        data={"csrf": token, "scope": "read"},
        headers={"Origin": "https://evil.example"},
    )
    assert evil.status_code == 403
    made = client.post("/ui/keys", data={"csrf": token, "scope": "read"})
    assert made.status_code == 200 and re.search(r'value="siamid_[0-9a-f]{8}_', made.text)
    # Shown once: the system page afterwards lists the key's prefix, never the key.
    assert not re.search(r'value="siamid_[0-9a-f]{8}_', client.get("/ui/system").text)


def test_names_are_escaped_and_removal_goes_through_a_job(
    client: TestClient, keys: Keys, prepared: Prepared, rt: Runtime, tmp_path: Path
) -> None:
    from siamese.synthetic import generate_gallery

    token = sign_in(client, keys.write)
    photo = next((prepared.gallery / "person_0001").iterdir()).read_bytes()
    (new, _), *_ = generate_gallery(
        tmp_path, identities=1, per_identity=1, seed=9, first_identity=300
    )
    r = client.post(
        "/ui/enrol",
        data={"csrf": token, "name": HOSTILE},
        files=[("images", ("<b>x</b>.png", photo)), ("images", ("new.png", new.read_bytes()))],
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    page = client.get(r.headers["location"])
    assert HOSTILE not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "&lt;b&gt;x&lt;/b&gt;.png" in page.text
    assert "conflict" in page.text  # those bytes are person_0001's already
    assert "script-src 'self'" in page.headers["content-security-policy"]
    too_big = client.post(
        "/ui/enrol",
        data={"csrf": token, "name": "big"},
        files=[("images", ("big.png", b"x" * 200_001))],
    )
    assert too_big.status_code == 413 and "big.png is larger than" in too_big.text
    listed = client.get("/ui/gallery", params={"q": "onerror"})
    assert HOSTILE not in listed.text and "1 person" in listed.text

    # Removal: confirmed on a page of its own, then a job; the photo and its thumbnails go.
    thumb = re.search(r'src="(/ui/thumbs/[0-9a-f]{64}\.jpg)\?size=160', listed.text)
    assert thumb is not None and client.get(thumb.group(1)).status_code == 200
    assert list((rt.settings.home_dir / "cache" / "thumbs").rglob("*.jpg"))
    confirm = client.get("/ui/person/remove", params={"name": HOSTILE})
    assert confirm.status_code == 200 and 'id="confirm-remove"' in confirm.text
    gone = client.post(
        "/ui/person/remove", data={"csrf": token, "name": HOSTILE}, follow_redirects=False
    )
    assert gone.status_code == 303 and gone.headers["location"].startswith("/ui/jobs/")
    assert client.get(thumb.group(1)).status_code == 404
    assert not list((rt.settings.home_dir / "cache" / "thumbs").rglob(thumb.group(1)[11:75] + "*"))


def test_no_ui_leaves_the_console_out(rt: Runtime) -> None:
    app = create_app(api_settings=ApiSettings(ui=False, access_log=False), runtime=rt)
    with TestClient(app) as c:
        assert c.get("/ui/", follow_redirects=False).status_code == 404
        assert c.get("/ui/static/console.js").status_code == 404


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/v1/jobs"])
def test_sign_in_never_sends_elsewhere(client: TestClient, keys: Keys, target: str) -> None:
    r = client.post(
        "/ui/signin", data={"key": keys.read["X-API-Key"], "next": target}, follow_redirects=False
    )
    assert r.headers["location"] == "/ui/gallery"


def test_no_ui_option_reaches_every_worker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from pipelines.cli import app

    started: list[ApiSettings] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(ApiSettings()))
    monkeypatch.setenv("SIAMID_HOME", str(tmp_path))
    monkeypatch.delenv("SIAMID_DATABASE_URL", raising=False)
    monkeypatch.setenv("SIAMID_API_UI", "1")  # so that the test's end restores it
    assert CliRunner().invoke(app, ["api"]).exit_code == 0
    assert CliRunner().invoke(app, ["api", "--no-ui"]).exit_code == 0
    assert [s.ui for s in started] == [True, False]


def test_sign_out_and_revocation_end_the_session(
    client: TestClient, keys: Keys, rt: Runtime
) -> None:
    from pipelines.services.apikeys import authenticate, revoke_api_key

    token = sign_in(client, keys.read)
    r = client.post("/ui/signout", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and f"{COOKIE}=" in r.headers["set-cookie"]
    assert client.get("/ui/gallery", follow_redirects=False).status_code == 303

    sign_in(client, keys.read)
    key = authenticate(rt.sessions, keys.read["X-API-Key"])
    assert key is not None
    revoke_api_key(rt.sessions, key.id)
    assert client.get("/ui/gallery", follow_redirects=False).status_code == 303


def test_a_photos_face_boxes_are_drawn_where_detection_found_them(rt: Runtime) -> None:
    """For a model of detected faces, the person page draws each stored face box (as shares
    of the photo) and says the detection outcome."""
    from dataclasses import replace

    from pipelines.api.ui.gallery import photo_views
    from pipelines.services.crops import CropSpec
    from pipelines.services.detection import detector
    from pipelines.services.models import resolve_model
    from storage.faces import StoredFace, add_detection
    from storage.images import labelled_images

    det = detector()
    with rt.sessions.begin() as s:
        (one, _, _), (two, _, _) = labelled_images(session=s)[:2]
        face = StoredFace(0, (10, 20, 50, 80), [[0.0, 0.0]] * 5, 1.0, 30.0, chosen=True)
        for image_id, outcome, faces in ((one, "ok", [face]), (two, "no_face", [])):
            add_detection(
                session=s,
                face_image_id=image_id,
                detector=det.name,
                detector_version=det.version,
                outcome=outcome,
                faces=faces,
            )
    # A detect-mode model with no vectors yet: what detection made of each photo shows.
    model = replace(resolve_model(rt.sessions, None), id=10_000, crop=CropSpec.dlib_chips())
    views = photo_views(rt, [one, two], model)
    width, height = views[one].width, views[one].height
    assert width and height
    box = views[one].boxes[0]
    assert box.chosen and (box.left, box.top) == (100 * 10 / width, 100 * 20 / height)
    assert (box.width, box.height) == (100 * 40 / width, 100 * 60 / height)
    assert views[one].outcome == "waiting" and views[two].outcome == "no_face"
    assert views[two].boxes == []


def test_reports_open_for_a_session_and_nothing_outside_them(
    client: TestClient, keys: Keys, rt: Runtime
) -> None:
    reports = rt.settings.reports_dir / "demo"
    reports.mkdir(parents=True)
    (reports / "report.html").write_text("<h1>figures</h1>")
    (reports / "outside.html").symlink_to(rt.settings.home_dir / "siamid.db")
    url = "/ui/reports/demo/report.html"
    assert client.get(url, follow_redirects=False).headers["location"].startswith("/ui/signin")
    sign_in(client, keys.read)
    assert "demo/report.html" in client.get("/ui/system").text
    r = client.get(url)
    assert r.status_code == 200 and r.text == "<h1>figures</h1>"
    assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none'
    for escape in ("/ui/reports/demo/outside.html", "/ui/reports/%2e%2e/siamid.db"):
        assert client.get(escape).status_code == 404, escape
