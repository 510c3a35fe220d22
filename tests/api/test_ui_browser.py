"""The web console in a real browser (Playwright driving Debian's Chromium, as the report's
test does): sign in, enrol a person from three photos and follow the job, identify a photo of
them and of a stranger from the labels on the boxes, a hostile name shown as text with no
dialog, remove the person; pages without a session send the browser to sign in.

One server (uvicorn on a thread, over a copy of the prepared home), one browser and one page
serve every test of this module, in order: each test starts where the previous one ended.
Locally the tests skip when Chromium is absent; under CI=true that is a failure.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipelines.api.app import create_app
from pipelines.api.settings import ApiSettings
from pipelines.services.apikeys import create_api_key
from pipelines.services.calibration import calibrate
from pipelines.services.runtime import open_runtime
from siamese.synthetic import generate_gallery
from tests.api.support import Prepared, home_settings
from tests.support import chromium

HOSTILE = "<img src=x onerror=alert(1)>"
NEWCOMER = "Ada Newcomer"


@dataclass
class Console:
    base: str
    page: Any
    dialogs: list[str]
    write_key: str
    newcomer: list[Path]  # three to enrol, the fourth to identify
    stranger: Path


@pytest.fixture(scope="module")
def console(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    sync_api = pytest.importorskip("playwright.sync_api")
    import uvicorn

    executable = chromium()
    root = tmp_path_factory.mktemp("ui-browser")
    shutil.copytree(prepared.home, root / "home")
    rt = open_runtime(home_settings(root / "home"))
    write_key = create_api_key(rt.sessions, "write").token
    people = generate_gallery(
        root / "new", identities=2, per_identity=4, seed=5, first_identity=100, variation=0.15
    )
    # The operator's step before serving: a threshold calibrated on people who are not
    # enrolled (the quick model's margin rule alone accepts look-alikes).
    visitors = root / "visitors"
    generate_gallery(
        visitors, identities=12, per_identity=2, seed=6, first_identity=200, variation=0.15
    )
    calibrate(rt, visitors, 0.05)
    newcomer = [p for p, name in people if name == people[0][1]]
    stranger = next(p for p, name in people if name != people[0][1])
    app = create_app(
        api_settings=ApiSettings(poll_seconds=0.1, access_log=False, max_upload_bytes=200_000),
        runtime=rt,
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        page.set_default_timeout(30_000)
        dialogs: list[str] = []

        def on_dialog(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        try:
            yield Console(base, page, dialogs, write_key, newcomer[:4], stranger)
        finally:
            browser.close()
            server.should_exit = True
            thread.join(10)
            rt.engine.dispose()


def loaded_images(page: Any, selector: str, timeout: float = 10.0) -> int:
    """How many of the images are shown, once every one has loaded (or failed to)."""
    script = "els => els.map(e => e.complete ? e.naturalWidth > 0 : null)"
    deadline = time.monotonic() + timeout
    while None in (states := page.eval_on_selector_all(selector, script)):
        assert time.monotonic() < deadline, f"{selector} still loading: {states}"
        time.sleep(0.05)
    assert all(states), f"{selector}: some images did not load: {states}"
    return len(states)


def test_pages_without_a_session_go_to_sign_in(console: Console) -> None:
    page = console.page
    for path in ("/ui/", "/ui/gallery", "/ui/system", "/ui/identify"):
        page.goto(console.base + path)
        assert page.url.startswith(console.base + "/ui/signin"), (path, page.url)
    page.goto(console.base + "/ui/")
    field = page.locator("input[type=text], input[type=password]").first
    assert field.get_attribute("name") == "key"


def test_sign_in_with_a_key(console: Console) -> None:
    page = console.page
    page.goto(console.base + "/ui/")
    page.locator("input[type=text], input[type=password]").first.fill(console.write_key)
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/gallery")
    assert "8 people" in page.inner_text("h1")
    assert loaded_images(page, ".person-card img") == 8
    assert console.write_key not in page.url and console.write_key not in page.content()
    # Every link of the page it lands on opens (with the session the browser holds).
    links = set(page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"))
    assert len(links) > 8
    for link in sorted(links):
        assert page.request.get(link).status == 200, link


def enrol(console: Console, name: str, photos: list[Path]) -> list[str]:
    """Enrol through the form and follow the job to its end; each photo's outcome."""
    page = console.page
    page.goto(console.base + "/ui/enrol")
    page.fill("#name", name)
    page.set_input_files("#images", [str(p) for p in photos])
    page.click("#enrol-submit")
    page.wait_for_url("**/ui/enrolments/*")
    page.wait_for_selector(".follow[data-finished=yes]", state="attached", timeout=60_000)
    assert page.inner_text("#job-status") == "done", page.inner_text("#job-error")
    return page.eval_on_selector_all(".outcomes td.outcome", "els => els.map(e => e.textContent)")


def test_enrol_three_photos_and_follow_the_job(console: Console) -> None:
    outcomes = enrol(console, NEWCOMER, console.newcomer[:3])
    assert outcomes == ["embedded"] * 3


def identify(console: Console, photo: Path) -> list[str]:
    page = console.page
    page.goto(console.base + "/ui/identify")
    page.set_input_files("#probe", str(photo))
    page.wait_for_selector("body[data-identify=done]", state="attached")
    return page.eval_on_selector_all("#probe-frame .box .tag", "els => els.map(e => e.textContent)")


def test_identify_the_newcomer_and_a_stranger(console: Console) -> None:
    assert identify(console, console.newcomer[3]) == [f"1: {NEWCOMER}"]
    numbers = console.page.inner_text(".face .numbers")
    assert "distance" in numbers and "threshold" in numbers
    assert loaded_images(console.page, ".candidates img") == 5
    assert identify(console, console.stranger) == ["1: unknown"]


def test_a_hostile_name_is_text_and_opens_no_dialog(console: Console) -> None:
    enrol(console, HOSTILE, [console.stranger])
    page = console.page
    page.click("h1 a.person-name")
    page.wait_for_url("**/ui/person?name=*")
    assert page.inner_text("h1") == HOSTILE
    page.goto(console.base + "/ui/gallery?q=onerror")
    assert page.inner_text(".person-card .name") == HOSTILE
    page.goto(console.base + "/ui/system")
    assert console.dialogs == []
    assert page.locator("img[src=x]").count() == 0


def test_remove_the_person(console: Console) -> None:
    page = console.page
    page.goto(console.base + "/ui/gallery?q=newcomer")
    page.click(f"text={NEWCOMER}")
    assert len(page.query_selector_all(".photo")) == 3
    page.click("text=Remove this person…")
    page.click("#confirm-remove")
    page.wait_for_url("**/ui/jobs/*")
    page.wait_for_selector(".follow[data-finished=yes]", state="attached", timeout=60_000)
    assert page.inner_text("#job-status") == "done"
    page.goto(console.base + "/ui/gallery?q=newcomer")
    assert page.locator(".person-card").count() == 0
    assert identify(console, console.newcomer[3]) == ["1: unknown"]
    assert console.dialogs == []
