"""The API on PostgreSQL: keys, pages, identify, enrolment and removal through ASGI."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from pipelines.api.app import create_app
from pipelines.api.settings import ApiSettings
from pipelines.services.apikeys import create_api_key
from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.services.indexing import index_pending
from pipelines.services.runtime import open_runtime
from siamese.synthetic import generate_gallery
from tests.api.support import home_settings, quick_model, wait_job, wait_ready


@pytest.mark.postgres
def test_api_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    generate_gallery(tmp_path / "g", identities=6, per_identity=3, seed=3)
    rt = open_runtime(home_settings(tmp_path / "home", database_url=postgres_url))
    import_items(scan_image_folder(tmp_path / "g"), sessions=rt.sessions)
    index_pending(rt, quick_model(rt), workers=0)
    read = {"X-API-Key": create_api_key(rt.sessions, "read").token}
    write = {"X-API-Key": create_api_key(rt.sessions, "write").token}
    try:
        with TestClient(create_app(api_settings=ApiSettings(poll_seconds=0.1), runtime=rt)) as c:
            wait_ready(c)
            page = c.get("/v1/identities", params={"offset": 2, "limit": 2}, headers=read).json()
            assert [i["name"] for i in page["items"]] == ["person_0002", "person_0003"]
            assert page["total"] == 6 and page["items"][0]["accepted"] == 3
            probe = (tmp_path / "g" / "person_0004" / "001.png").read_bytes()
            found = c.post("/v1/identify", headers=read, files={"image": ("p.png", probe)})
            assert found.json()["faces"][0]["identity"] == "person_0004"
            assert c.get("/v1/identities/" + quote("a\x00b"), headers=read).status_code == 422
            name = "Zoë 王 O'Brien"
            r = c.post(
                f"/v1/identities/{quote(name)}/images",
                headers=write,
                files={"images": ("x.png", (tmp_path / "g/person_0000/000.png").read_bytes())},
            )
            assert r.status_code == 200 and r.json()["duplicates"] == 0  # bytes of person_0000
            assert r.json()["conflicts"] == 1
            gone = c.delete("/v1/identities/person_0004", headers=write)
            assert gone.status_code == 200
            after = c.post("/v1/identify", headers=read, files={"image": ("p.png", probe)})
            names = {x["identity"] for x in after.json()["faces"][0]["candidates"]}
            assert "person_0004" not in names
            assert wait_job(c, gone.json()["job"]["id"], read)["status"] == "done"
    finally:
        rt.engine.dispose()
