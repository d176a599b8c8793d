"""The package's import graph: no circles, and every arrow points down the floor table.

A module stands above everything it imports. The rooms of `gdro_ray` (its sub-packages and
root modules) sit on floors; a module may import its own room and the rooms on lower floors,
never a room on its own floor or above. Entry points live only in `cli/`, the top floor, so
no domain package reaches up to a command. Imports inside functions count as much as those at
the top of a file (they are how a module avoids paying for torch or Ray until it needs them,
not a way around the layering), and so do `importlib.import_module("gdro_ray...")` calls.

Read statically with `ast`: nothing is imported, so the test costs milliseconds.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "gdro_ray"

# floor -> rooms. Ground: shared helpers and the pure controllers; top: the commands.
FLOORS: dict[int, tuple[str, ...]] = {
    0: ("errors",),
    1: ("utils", "algorithms"),                             # shared helpers; the pure controllers and math
    2: ("protocol",),                                       # the messages of a step between the actors
    3: ("transfer",),                                       # the byte planes (rows by the algorithms' split)
    4: ("data", "rewards", "engines", "metrics", "learner"),  # one concern each
    5: ("config", "models"),                                # the schema checks data/reward/metric names
    6: ("eval", "sim", "integrations"),                     # built from config, models and engines
    7: ("service",),                                        # the Ray actors and the driver
    8: ("cli",),                                            # every entry point
}
FLOOR_OF = {room: floor for floor, rooms in FLOORS.items() for room in rooms}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p != PACKAGE / "__init__.py"}


def _resolve(name: str) -> str | None:
    """The longest prefix of `name` that is a module of the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name if name and name != "gdro_ray" else None


def imports_of(module: str) -> set[str]:
    """Every gdro_ray module that `module` imports, wherever in the file the import stands."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {_resolve(a.name) for a in node.names if a.name.startswith("gdro_ray")}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else (node.module or "")
            if base.startswith("gdro_ray"):
                out |= {_resolve(f"{base}.{a.name}") if f"{base}.{a.name}" in MODULES else _resolve(base)
                        for a in node.names}
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("gdro_ray")):
            out.add(_resolve(node.args[0].value))
    out.discard(None)
    out.discard(module)
    return out  # type: ignore[return-value]


GRAPH = {m: imports_of(m) for m in MODULES}


def room(module: str) -> str:
    return module.split(".")[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_reader_sees_every_kind_of_import():
    """The parser finds top-level, function-level, relative and importlib imports (or the checks below prove nothing)."""
    assert "gdro_ray.service.driver" in GRAPH["gdro_ray.cli.train"]          # inside a function
    assert "gdro_ray.algorithms.partition" in GRAPH["gdro_ray.transfer.rollout_arrays"]  # at the top
    assert "gdro_ray.rewards._worker_pool" in GRAPH["gdro_ray.rewards.math_reward"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_room_has_a_floor():
    rooms = {room(m) for m in MODULES}
    assert rooms <= set(FLOOR_OF), f"rooms without a floor in FLOORS: {sorted(rooms - set(FLOOR_OF))}"


def test_no_import_circles():
    assert cycles(GRAPH) == []
    rooms: dict[str, set[str]] = {}
    for m, deps in GRAPH.items():
        rooms.setdefault(room(m), set()).update(room(d) for d in deps if room(d) != room(m))
    assert cycles(rooms) == []


def test_every_arrow_points_down():
    upward = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() for d in deps
                    if room(d) != room(m) and FLOOR_OF[room(d)] >= FLOOR_OF[room(m)])
    assert upward == []


def test_entry_points_live_in_cli():
    """No `__main__` block and no `cli_main` outside cli/: a domain package exports functions."""
    found = []
    for m, path in MODULES.items():
        if room(m) == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                found.append(f"{m}: __main__ block")
            if isinstance(node, ast.FunctionDef) and node.name == "cli_main":
                found.append(f"{m}: cli_main")
    assert found == []


@pytest.mark.parametrize("module, banned", [
    ("gdro_ray.transfer.rollout_arrays", ("torch", "ray")),  # the data plane is numpy: samplers and the driver load it
    ("gdro_ray.algorithms.partition", ("torch", "ray")),
    ("gdro_ray.cli.main", ("torch", "ray", "numpy", "vllm")),  # `gdro-ray --help` stays fast
])
def test_light_modules_stay_light(module, banned):
    code = f"import sys, {module}; print([m for m in {banned!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
