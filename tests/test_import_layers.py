"""The project's imports run one way: no arrow from a lower package to a higher one, no circle.

Every module of the shipped packages (``[tool.setuptools.packages.find]`` in
pyproject.toml) is read with :mod:`ast`, without importing it, and each
``import`` and ``from ... import`` is an arrow to a project module: at module
level or inside a function, under ``TYPE_CHECKING`` or not (a type-only import
still means the lower package knows the higher one).  Packages sit on floors;
a package imports only packages on floors below its own.  ``core`` is the
ground floor and imports nothing of the project.

The allow-lists below are empty: issue 21 moved the entry points to ``app/``,
broke the worker's circle and let pipelines register one way.  A new
exception must be listed there with its reason.  Run it alone with
``python -m pytest tests/test_import_layers.py``.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The floors, from the ground up; a package imports only packages on lower floors.
#: ``dicom_node`` sits below ``worker`` (workers send results with its SCU and read
#: its spool); ``app`` holds the entry points.
FLOORS: list[set[str]] = [
    {"core"},
    {"pipelines", "migrations"},
    {"dicom_node"},
    {"worker"},
    {"scheduler"},
    {"web"},
    {"app"},
]

#: Modules whose arrows to higher floors are still allowed (none: the entry
#: points live in ``app/``, the top floor).
UPWARD_ALLOWED: dict[str, str] = {}

#: Circles still allowed, each as the modules it may span (none are left).
CIRCLES_ALLOWED: dict[str, str] = {}


def project_packages() -> list[str]:
    """The top-level packages the distribution ships, from pyproject.toml."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [
        name.rstrip("*") for name in config["tool"]["setuptools"]["packages"]["find"]["include"]
    ]


def project_modules() -> dict[str, Path]:
    """Every module of the shipped packages by dotted name (a package by its ``__init__``)."""
    modules: dict[str, Path] = {}
    for package in project_packages():
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _project_module(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` is or lies in (``core.config.Settings`` -> ``core.config``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(module: str, path: Path) -> Iterator[str]:
    """The dotted names a module imports, relative imports resolved."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                yield f"{base}.{alias.name}"


def import_graph() -> dict[str, set[str]]:
    """Each project module and the project modules it imports."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {_project_module(name, modules) for name in _imported_names(module, path)}
        graph[module] = {target for target in targets if target and target != module}
    return graph


def _floor(module: str) -> int:
    package = module.split(".")[0]
    for floor, packages in enumerate(FLOORS):
        if package in packages:
            return floor
    raise AssertionError(f"package {package!r} has no floor: add it to FLOORS")


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The import circles: strongly connected sets of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(component)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return circles


def _within(circle: set[str], span: str) -> bool:
    """Whether a circle lies in an allowed span: one package, or the modules named."""
    names = span.split()
    if len(names) == 1:
        return all(module == span or module.startswith(span + ".") for module in circle)
    return circle <= set(names)


def test_every_shipped_package_has_a_floor() -> None:
    for package in project_packages():
        _floor(package)


def test_no_arrow_runs_up_and_core_imports_nothing_of_the_project() -> None:
    graph = import_graph()
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module not in UPWARD_ALLOWED
        for target in targets
        if _floor(target) > _floor(module)
        or (_floor(target) == _floor(module) and target.split(".")[0] != module.split(".")[0])
    )
    assert upward == []


def test_no_import_circle() -> None:
    circles = [
        sorted(circle)
        for circle in _circles(import_graph())
        if not any(_within(circle, span) for span in CIRCLES_ALLOWED)
    ]
    assert circles == []


def test_the_allow_lists_hold_only_what_still_breaks_the_rule() -> None:
    graph = import_graph()
    for module in UPWARD_ALLOWED:
        assert any(_floor(target) > _floor(module) for target in graph.get(module, ())), module
    circles = _circles(graph)
    for span in CIRCLES_ALLOWED:
        assert any(_within(circle, span) for circle in circles), span
