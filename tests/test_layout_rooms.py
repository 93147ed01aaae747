"""The package's rooms and who may import whom (docs/architecture.md), checked from the source.

- pyproject.toml lists every package folder, and maps training/, deploy/, benchmarks/ to
  rtdecode.training, rtdecode.deploy, rtdecode.benchmarks;
- the runtime never imports that offline side (the torch engine's decoder module excepted; the
  CLI imports it only inside the sub-commands that run it);
- no import cycles, counting imports inside functions too;
- the bare names `training`, `deploy`, `benchmarks` refuse to import;
- (slow) the wheel holds only `rtdecode`, and its offline commands work from a plain install.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")

ROOT = Path(__file__).resolve().parents[1]
# folder at the repository root -> the package it installs as
OFFLINE = {"training": "rtdecode.training", "deploy": "rtdecode.deploy", "benchmarks": "rtdecode.benchmarks"}
SOURCES = {"rtdecode": "rtdecode", **OFFLINE}
# The one runtime module allowed to reach into the offline side: the torch engines rebuild the decoder.
TORCH_ENGINE = "rtdecode.engines.torch_engine"
TORCH_ENGINE_MAY_IMPORT = {"rtdecode.training.model", "rtdecode.training.checkpoint", "rtdecode.training.export"}
# The CLI is the front door of both sides; it imports the offline side inside the sub-command only.
CLI_ROOM = "rtdecode.commands"


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (a package means its __init__)
    line: int
    in_function: bool
    relative: bool


def _module_files() -> dict[str, Path]:
    """Every module of the installed package, by its one name (folders mapped as pyproject says)."""
    mods: dict[str, Path] = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([package, *parts])] = path
    return mods


MODULES = _module_files()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> list[Import]:
    """The imports of one module that land in rtdecode, relative ones resolved, with where they are."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: list[Import] = []

    def add(target: str, node: ast.Import | ast.ImportFrom, in_function: bool) -> None:
        if target in MODULES:
            relative = isinstance(node, ast.ImportFrom) and node.level > 0
            found.append(Import(name, target, node.lineno, in_function, relative))

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, in_function)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in MODULES else base, node, in_function)  # a submodule, else the package
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return found


ALL_IMPORTS = {name: _imports(name) for name in MODULES}


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _room_of(name: str) -> str | None:
    """The offline package a module belongs to, or None for the runtime."""
    return next((p for p in OFFLINE.values() if _in(name, p)), None)


# ---- (a) the package list --------------------------------------------------------------------------
def test_pyproject_lists_every_package_folder_and_maps_the_three_offline_folders():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    with_init = {n for n in MODULES if _is_package(n)}
    with_code = {n.rpartition(".")[0] for n in MODULES if not _is_package(n)}
    assert with_code <= with_init, f"folders with modules but no __init__.py (left out of the wheel): {sorted(with_code - with_init)}"
    assert sorted(setup["packages"]) == sorted(with_init), (
        f"pyproject [tool.setuptools] packages {sorted(setup['packages'])} != package folders {sorted(with_init)}")
    assert setup["package-dir"] == {package: folder for folder, package in SOURCES.items()}


# ---- (b) the runtime does not import the offline side ----------------------------------------------
def test_runtime_never_imports_training_deploy_or_benchmarks():
    bad = []
    for name, imports in ALL_IMPORTS.items():
        if _room_of(name) is not None:
            continue
        for imp in imports:
            if _room_of(imp.target) is None:
                continue
            if name == TORCH_ENGINE and imp.target in TORCH_ENGINE_MAY_IMPORT:
                continue
            if _in(name, CLI_ROOM) and imp.in_function:
                continue  # `rtdecode train` etc.: the offline side loads only when that command runs
            bad.append(f"{MODULES[name].relative_to(ROOT)}:{imp.line} imports {imp.target}")
    assert not bad, "the runtime imports the offline side:\n" + "\n".join(bad)


def test_offline_folders_import_their_own_modules_relatively():
    bad = [f"{MODULES[name].relative_to(ROOT)}:{imp.line}: `{imp.target}` absolute; use a relative import"
           for name, imports in ALL_IMPORTS.items() if (room := _room_of(name)) is not None
           for imp in imports if _in(imp.target, room) and not imp.relative]
    assert not bad, "\n".join(bad)


# ---- (c) no import cycles ----------------------------------------------------------------------------
def _graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line}. An edge to a package is an edge to its __init__.

    Only the named module is an edge, not the parent packages Python initialises on the way: a
    package __init__ that re-exports its submodules would otherwise close a false cycle with every
    submodule that imports a sibling (sessions/readers.py -> sessions/__init__ -> readers).
    """
    graph: dict[str, dict[str, int]] = {n: {} for n in MODULES}
    for name, imports in ALL_IMPORTS.items():
        for imp in imports:
            if imp.target != name:
                graph[name].setdefault(imp.target, imp.line)
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per back edge of a depth-first search (empty when the graph is acyclic)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []
    found: list[list[str]] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    return found


def _show(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    steps = [f"{a} (line {graph[a][b]}) -> " for a, b in zip(cycle, cycle[1:], strict=False)]
    return "".join(steps) + cycle[-1]


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 7}, "d": {"a": 1}}
    assert [_show(c, graph) for c in _cycles(graph)] == ["a (line 3) -> b (line 5) -> c (line 7) -> a"]
    assert _cycles({"a": {"b": 1}, "b": {}, "c": {"a": 2, "b": 3}}) == []


def test_no_import_cycles_anywhere():
    graph = _graph()
    assert sum(len(v) for v in graph.values()) > 100  # the graph was built (imports were resolved)
    assert graph["rtdecode.training.train"].keys() >= {"rtdecode.training.model", "rtdecode.progress"}
    cycles = _cycles(graph)
    for c in cycles:
        print("import cycle:", _show(c, graph))
    assert not cycles, "import cycles:\n" + "\n".join(_show(c, graph) for c in cycles)


# ---- (d) the bare folder names refuse to import -----------------------------------------------------------
def _python(code: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("folder", sorted(OFFLINE))
def test_bare_folder_name_refuses_to_import_from_the_repository_root(folder):
    r = _python(f"import {folder}", ROOT)
    assert r.returncode != 0
    assert f"ImportError: import {OFFLINE[folder]}, not {folder}:" in r.stderr, r.stderr


# ---- (e) the wheel -------------------------------------------------------------------------------------
def _copy_source(dest: Path) -> Path:
    """The project tree without build outputs, so building leaves nothing in the checkout."""
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".ruff_cache", "tests", "docs", "out", "runs",
                                    "demo-output")
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


@pytest.mark.slow
def test_wheel_holds_only_rtdecode_and_its_offline_commands_run_from_a_plain_install(tmp_path):
    src = _copy_source(tmp_path / "src")
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(wheels)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = wheels.glob("rtdecode-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    stray = [n for n in names if not (n.startswith("rtdecode/") or n.split("/")[0].startswith("rtdecode-")
                                      and n.split("/")[0].endswith(".dist-info"))]
    assert not stray, f"files outside rtdecode/ in the wheel: {stray}"
    assert {"rtdecode/training/train.py", "rtdecode/deploy/build_engine.py", "rtdecode/benchmarks/soak.py",
            "rtdecode/deploy/lsl_api.cfg", "rtdecode/assets/demo/model.onnx"} <= set(names)

    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, PYTHONPATH=str(target))
    r = _python("import rtdecode.training, rtdecode.deploy, rtdecode.benchmarks as b; print(b.__file__)",
                elsewhere, env)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(target), f"not the installed copy: {r.stdout}"
    for command in ("train", "export", "build-engine", "bench"):
        r = subprocess.run([sys.executable, "-m", "rtdecode", command, "--help"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"rtdecode {command} --help: {r.stderr}"
        assert f"rtdecode {command}" in r.stdout
    for folder in ("training", "deploy"):
        r = _python(f"import {folder}", elsewhere, env)
        assert r.returncode != 0
        assert f"No module named '{folder}'" in r.stderr, r.stderr
