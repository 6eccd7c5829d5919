"""The package's shape: no import circles but the registries' lazy loads, small modules, one run.py per job kind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from aikd.jobs import KINDS

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "aikd"
MAX_LINES = 500
# A registry imports the modules that register its entries when an entry is first asked for; those
# modules import the registry to register (models, teachers, detectors) or run through the job shell, which runs
# other kinds to build the embedded default (job kinds). That circle is the design, not an accident.
REGISTRY_LOADS = {("aikd.models.registry", "aikd.models"), ("aikd.models.registry", "aikd.models.iresnet"),
                  ("aikd.teachers.base", "aikd.teachers"), ("aikd.teachers.base", "aikd.teachers.external"),
                  ("aikd.teachers.base", "aikd.teachers.fr_teachers"), ("aikd.detect.base", "aikd.detect"),
                  ("aikd.detect.base", "aikd.detect.mtcnn")} | {
    ("aikd.jobs", f"aikd.{kind.replace('-', '')}.run") for kind in KINDS}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every aikd module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("aikd"):
                found.add(name)
    return found


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, groups, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))

    for v in edges:
        if v not in index:
            visit(v)
    return groups


def test_no_import_circle_but_the_registries_lazy_loads():
    modules = _modules()
    edges = {m: _imports(p, modules) - {m} for m, p in modules.items()}
    for source, target in REGISTRY_LOADS:
        assert target in edges[source], f"{source} no longer loads {target}: update REGISTRY_LOADS"
        edges[source].discard(target)
    assert _circles(edges) == []


def test_a_circle_is_found_where_there_is_one():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_longer_than_a_reader_can_hold(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_job_kind_is_a_package_whose_entry_is_run_py(kind):
    package = kind.replace("-", "")
    assert (PACKAGE / package / "run.py").is_file()
    assert KINDS[kind]().run.__module__ == f"aikd.{package}.run"
