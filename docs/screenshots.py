"""The README's screenshots of the web console, one per page, from the synthetic demo gallery.

    SIAMID_HOME=/tmp/demo .venv/bin/siamid demo          # the synthetic demo (a few minutes)
    .venv/bin/python docs/screenshots.py /tmp/demo         # writes docs/console-*.png

Works on a copy of the home (the demo's gallery is left as it was): serves the API with its
console on a free local port, signs in with a new write key, enrols a newcomer from three
synthetic photos, identifies a fourth, and photographs each page in headless Chromium
(Debian's package, driven by Playwright). PNGs are reduced to 128 colours to stay small.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.api.app import create_app  # noqa: E402
from pipelines.api.settings import ApiSettings  # noqa: E402
from pipelines.services.apikeys import create_api_key  # noqa: E402
from pipelines.services.demo import DEMO_VARIATION  # noqa: E402
from pipelines.services.runtime import open_runtime  # noqa: E402
from pipelines.settings import Settings  # noqa: E402
from siamese.synthetic import generate_gallery  # noqa: E402

NEWCOMER = "Ada Newcomer"
SIZE = {"width": 1100, "height": 760}


def shoot(page, path: Path, *, full: bool = False, colors: int = 128) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(path), full_page=full)
    Image.open(path).convert("RGB").quantize(colors).save(path, optimize=True)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB")


def main() -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home", type=Path, help="SIAMID_HOME of a finished `siamid demo`")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="siamid-shots-"))
    shutil.copytree(args.home, work / "home")
    settings = Settings(home=work / "home", database_url=f"sqlite:///{work / 'home' / 'siamid.db'}")
    rt = open_runtime(settings)
    key = create_api_key(rt.sessions, "write").token
    people = generate_gallery(
        work / "new",
        identities=1,
        per_identity=4,
        seed=7,
        first_identity=50_000,
        variation=DEMO_VARIATION,
    )
    photos = [str(p) for p, _ in people]
    app = create_app(api_settings=ApiSettings(access_log=False, poll_seconds=0.2), runtime=rt)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    while not server.started:
        time.sleep(0.05)
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport=SIZE)
        page.goto(base + "/ui/")
        shoot(page, args.out / "console-signin.png")
        page.fill("input[name=key]", key)
        page.keyboard.press("Enter")
        page.wait_for_url("**/ui/gallery")
        page.wait_for_load_state("networkidle")
        shoot(page, args.out / "console-gallery.png")

        page.goto(base + "/ui/enrol")
        page.fill("#name", NEWCOMER)
        page.set_input_files("#images", photos[:3])
        page.click("#enrol-submit")
        page.wait_for_selector(".follow[data-finished=yes]", state="attached", timeout=120_000)
        page.wait_for_load_state("networkidle")
        shoot(page, args.out / "console-enrol.png")

        page.goto(base + "/ui/gallery?q=person_0003")
        page.click(".person-card a")
        page.wait_for_load_state("networkidle")
        shoot(page, args.out / "console-person.png")

        page.goto(base + "/ui/identify")
        # A photo of an enrolled person that the gallery does not hold (the demo keeps each
        # person's last photo out to probe with).
        held_out = sorted((args.home / "demo" / "gallery" / "person_0003").iterdir())[-1]
        page.set_input_files("#probe", str(held_out))
        page.wait_for_selector("body[data-identify=done]", state="attached")
        page.wait_for_load_state("networkidle")
        shoot(page, args.out / "console-identify.png")

        page.goto(base + "/ui/system")
        shoot(page, args.out / "console-system.png", full=True)
        with page.expect_popup() as popup:
            page.click("text=demo/report.html")
        report = popup.value
        report.wait_for_load_state("load")
        plots = report.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth > 0)")
        print(
            f"the demo's report opened from the console: {sum(plots)} of {len(plots)} plots shown"
        )
        browser.close()
    server.should_exit = True
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
