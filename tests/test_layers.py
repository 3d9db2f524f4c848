"""The package's stages import one way only (README, "Layout"), and no module imports itself
back through others. Read from the source with `ast`: every import counts, also those inside
functions and under TYPE_CHECKING, since a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Top-level folders that become subpackages of mobilellm_export (pyproject.toml's package-dir).
FOLDERS = {"mobilellm_export": "mobilellm_export", "runtimes": "mobilellm_export.runtimes",
           "model": "mobilellm_export.model", "quant": "mobilellm_export.quant",
           "export": "mobilellm_export.export", "benchmarks": "mobilellm_export.benchmarks"}
BASE = {"__init__", "errors", "progress", "jsonfile", "jsonschemas", "interrupts", "arguments", "quiet", "versions", "table"}
COMMANDS = {"info", "verify", "verify_emulated", "bundle", "demo"}
# Lower layers never import higher ones; a layer may import itself. The CLI is the thin shell over
# all of them (its `bench` command runs the harness in benchmarks/).
ORDER = ["base", "runtimes", "model", "quant", "export", "commands", "benchmarks", "cli"]


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE:
        return "base"
    if parts[1] in COMMANDS:
        return "commands"
    return parts[1]  # runtimes, model, quant, export, benchmarks, cli


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imports(module: str, path: Path) -> set[str]:
    """mobilellm_export modules that `module` imports (relative imports resolved)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from package import submodule` imports the submodule.
            names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        out.update(n for n in names if n == "mobilellm_export" or n.startswith("mobilellm_export."))
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    return {m: {i for i in imports(m, p) if i in found and i != m} for m, p in found.items()}


def test_every_import_points_down_or_sideways(graph):
    wrong = []
    for module, targets in graph.items():
        for target in targets:
            src, dst = layer(module), layer(target)
            if ORDER.index(dst) > ORDER.index(src):
                wrong.append(f"{module} ({src}) imports {target} ({dst})")
            # The benchmarks stand apart: only the CLI's `bench` command reaches into their harness.
            if dst == "benchmarks" and src == "cli" and not target.startswith("mobilellm_export.benchmarks.harness"):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles(graph):
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, " -> ".join(cycle)


def test_the_checker_sees_what_it_must(graph):
    """Guards the checker itself: relative and lazy imports are found and classified."""
    assert "mobilellm_export.export.contract" in graph["mobilellm_export.export.executorch"]  # relative, package
    assert "mobilellm_export.export.executorch.decoder" in graph["mobilellm_export.export.executorch"]  # lazy
    assert "mobilellm_export.runtimes.registry" in graph["mobilellm_export.cli"]  # lazy, in a function
    assert layer("mobilellm_export.verify") == "commands" and layer("mobilellm_export.errors") == "base"
    assert layer("mobilellm_export.cli") == "cli" and layer("mobilellm_export.benchmarks.suite") == "benchmarks"
    assert layer("mobilellm_export.runtimes.manifest") == "runtimes"
