"""The layers import one way: entry points -> flows -> services -> ground floor.

Read from the source with ``ast`` (no imports run), so a violation names the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUND = ("siamese", "faces", "index", "storage")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, module in _imports(path):
            if module.split(".")[0] in forbidden or any(
                module == f or module.startswith(f + ".") for f in forbidden
            ):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


def test_ground_floor_packages_import_neither_each_other_nor_prefect() -> None:
    bad = []
    for pkg in GROUND:
        others = tuple(p for p in GROUND if p != pkg) + ("prefect", "pipelines")
        bad += _violations(pkg, others)
    assert not bad, "\n".join(bad)


def test_services_never_import_prefect_flows_or_entry_points() -> None:
    forbidden = ("prefect", "pipelines.flows", "pipelines.cli", "pipelines.demo", "pipelines.api")
    assert not (bad := _violations("pipelines/services", forbidden)), "\n".join(bad)


def test_no_flow_module_imports_another() -> None:
    assert not (bad := _violations("pipelines/flows", ("pipelines.flows",))), "\n".join(bad)
