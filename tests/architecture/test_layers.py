"""The layers import one way: entry points -> flows -> services -> ground floor.

Read from the source with ``ast`` (no imports run), so a violation names the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUND = ("siamese", "faces", "index", "storage")
#: Below the ground floor: readers of third-party file formats that ground-floor packages share
#: (dlib's .dat networks for siamese's face ResNet and faces' CNN detector). They import no
#: package of this project.
BASEMENT = ("dlibfile",)


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


def test_the_basement_imports_no_package_of_this_project() -> None:
    bad = []
    for pkg in BASEMENT:
        bad += _violations(pkg, GROUND + ("prefect", "pipelines"))
    assert not bad, "\n".join(bad)


def test_services_never_import_prefect_flows_or_entry_points() -> None:
    forbidden = ("prefect", "pipelines.flows", "pipelines.cli", "pipelines.demo", "pipelines.api")
    assert not (bad := _violations("pipelines/services", forbidden)), "\n".join(bad)


def test_no_flow_module_imports_another() -> None:
    assert not (bad := _violations("pipelines/flows", ("pipelines.flows",))), "\n".join(bad)


def test_the_http_api_never_imports_the_command_line() -> None:
    """Both are entry points over services and flows; neither calls the other."""
    assert not (bad := _violations("pipelines/api", ("pipelines.cli",))), "\n".join(bad)


PACKAGES = ("pipelines", "siamese", "faces", "index", "storage")


def _module_graph() -> dict[str, set[str]]:
    """Every project module's imports of other project modules (top level or inside functions,
    ``TYPE_CHECKING`` blocks too: a circle there still ties the modules together)."""
    modules: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        package = module if is_package else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                target = resolve(name)
                # a package importing its own submodules is how it composes them, not a circle
                if target and target != module and not target.startswith(module + "."):
                    graph[module].add(target)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles_anywhere() -> None:
    circles = _circles(_module_graph())
    assert not circles, "\n".join(" <-> ".join(c) for c in circles)


def test_the_circle_check_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]


def test_no_module_in_pipelines_is_over_400_lines() -> None:
    long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in sorted((ROOT / "pipelines").rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    ]
    assert not long, "\n".join(long)
