"""Fault: two processes write the same SQLite database at once, while a third holds its write
lock for a while.

Two processes import different folders into the gallery (the service behind
`siamid gallery import`, without Prefect's start-up) while a third holds SQLite's write lock
(``BEGIN IMMEDIATE``) for ``HOLD_S``. Promised: both wait their turn (the
busy timeout, ``SIAMID_SQLITE_BUSY_SECONDS``) and finish; no "database is locked", no traceback;
every photo of both folders is in the gallery afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pipelines.services.runtime import open_runtime
from siamese.synthetic import generate_gallery
from storage.models import FaceImage
from tests.api.support import home_settings
from tests.fault_support import child_env

pytestmark = pytest.mark.fault

HOLD_S = 1.5

HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""

IMPORTER = """
import sys
from pathlib import Path
from pipelines.services.runtime import Runtime
from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.settings import Settings
rt = Runtime(Settings())  # not open_runtime: importing needs no torch
_ = rt.engine
print("ready", flush=True)
sys.stdin.readline()  # go: the lock is held now
print("imported", import_items(scan_image_folder(Path(sys.argv[1])), sessions=rt.sessions).new)
"""


def test_sqlite_two_writers_wait_their_turn(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rt = open_runtime(home_settings(home))
    _ = rt.engine  # the schema at head before the writers start
    rt.engine.dispose()
    db = home / "siamid.db"
    for n, first in enumerate((0, 100)):
        generate_gallery(
            tmp_path / f"g{n}", identities=4, per_identity=3, seed=n, first_identity=first
        )

    env = child_env(SIAMID_HOME=str(home))
    env.pop("SIAMID_DATABASE_URL", None)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", IMPORTER, str(tmp_path / f"g{n}")],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (0, 1)
    ]
    for w in writers:  # both started, imports done, database open
        assert w.stdout is not None and w.stdout.readline().strip() == "ready"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), str(HOLD_S)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    t0 = time.monotonic()
    for w in writers:  # both at once
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    outputs = [w.communicate(timeout=120) for w in writers]
    elapsed = time.monotonic() - t0
    assert holder.wait(10) == 0

    for w, (out, err) in zip(writers, outputs, strict=True):
        assert w.returncode == 0, err
        assert "database is locked" not in out + err and "Traceback" not in err, err
        assert out.strip().endswith("imported 12"), out
    with open_runtime(home_settings(home)).sessions() as s:
        stored = s.scalar(select(func.count()).select_from(FaceImage))
    print(
        f"\nFAULT sqlite-writers: 2 imports of 12 photos each, both done {elapsed:.1f} s after "
        f"a third process took the write lock for {HOLD_S} s; {stored} photos stored"
    )
    assert stored == 24
    assert elapsed >= HOLD_S - 0.2, "the writers did not wait for the lock: no contention"
