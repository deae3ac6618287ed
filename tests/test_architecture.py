"""The architecture as tests: the core is Qt-free, its stage layers import only downward, modules import
without cycles, modules and functions stay small, heavy libraries load only when used, and every
third-party import is declared in pyproject.toml. Read from the source (ast); nothing is imported except
in the fresh-interpreter test."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cellsearch_gui"
CORE = f"{PACKAGE}.core"

# The stage layers of the core, lowest first: a module may import its own layer or lower ones only.
LAYERS: list[tuple[tuple[str, ...], str]] = [
    (("errors", "options", "validation", "jobs", "types"),
     "the vocabulary every stage shares: errors, option names and their domains, jobs, values"),
    (("io",), "files in and out (images, fields, datasets, CSV); knows no model"),
    (("models",), "what a network is, where its weights are and how it is built; knows no cell"),
    (("segmentation",), "finds cells in a field, with classical code or SAM networks"),
    (("crops",), "cuts and normalises one cell image per mask"),
    (("embedding",), "turns crops into feature vectors with the models"),
    (("index",), "nearest-neighbour search over feature vectors"),
    (("classify",), "EWC votes, combinations and evaluation over the index"),
    (("project",), "the project store on disk: cells, labels, runs, predictions, saved indexes"),
    (("export",), "results written out for people and other tools: CSV, the differential report, GeoJSON, "
                  ".h5ad, OME-Zarr"),
    (("app",), "orchestration of the stages, shared by the CLI and the GUI"),
]
RANK = {f"{CORE}.{name}": rank for rank, (names, _) in enumerate(LAYERS) for name in names}

QT_AND_FRONT_ENDS = ("PySide6", "shiboken6", "pyqtgraph", "superqt", f"{PACKAGE}.gui", f"{PACKAGE}.cli",
                     f"{PACKAGE}.cli_project", f"{PACKAGE}.__main__")
HEAVY = ("torch", "torchvision", "timm", "transformers", "open_clip", "segment_anything", "mobile_sam", "faiss",
         "sklearn", "scipy", "cv2", "PIL", "tifffile", "huggingface_hub", "safetensors", "numba", "anndata", "zarr",
         "ome_zarr", "shapely")
NOT_AT_IMPORT_TIME = ("PySide6", "shiboken6", "pyqtgraph", "torch", "faiss", "timm", "transformers", "cv2",
                      "sklearn", "anndata", "zarr", "ome_zarr")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

# distribution name (pyproject) -> import names, where they differ from the lower-cased name
IMPORT_NAMES = {
    "pyside6-essentials": ("PySide6", "shiboken6"),
    "opencv-python-headless": ("cv2",),
    "faiss-cpu": ("faiss",),
    "open_clip_torch": ("open_clip",),
    "segment-anything": ("segment_anything",),
    "pillow": ("PIL",),
    "scikit-learn": ("sklearn",),
    "mobilesam-mirror": ("mobile_sam",),
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (resolved to a module of ours when it names one)
    line: int
    function: str | None  # the enclosing function, None at module level (class bodies count as module level)
    type_only: bool  # under ``if TYPE_CHECKING:``

    @property
    def where(self) -> str:
        path = module_files()[self.module].relative_to(ROOT)
        return f"{path}:{self.line} ({'in ' + self.function + '()' if self.function else 'module level'})"


@cache
def module_files() -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its __init__.py)."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(module: str) -> bool:
    return module_files()[module].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        source = _absolute(module, node)
        # ``from pkg import sub`` imports the submodule pkg.sub when there is one
        return [f"{source}.{a.name}" if f"{source}.{a.name}" in module_files() else source for a in node.names]
    if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__"):  # importlib.import_module("x") / __import__("x")
            return [node.args[0].value]
    return []


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def _walk(module: str, node: ast.AST, function: str | None, type_only: bool):
    for child in ast.iter_child_nodes(node):
        for target in _targets(module, child):
            yield Import(module, target, child.lineno, function, type_only)
        inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
        yield from _walk(module, child, inner, type_only or _is_type_checking(child))


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    tree = ast.parse(module_files()[module].read_text(encoding="utf-8"))
    return tuple(_walk(module, tree, None, False))


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _core_modules() -> list[str]:
    return [m for m in module_files() if _under(m, CORE)]


def _layer_of(module: str) -> int | None:
    for name, rank in RANK.items():
        if _under(module, name):
            return rank
    return None


# ------------------------------------------------------------------------------------------ the rules

def test_the_core_never_imports_qt_or_the_front_ends():
    bad = [f"{imp.module} imports {imp.target} at {imp.where}"
           for module in _core_modules() for imp in imports_of(module)
           if any(_under(imp.target, banned) for banned in QT_AND_FRONT_ENDS)]
    assert not bad, "the core must stay Qt-free and below the CLI/GUI:\n" + "\n".join(bad)


def test_every_core_module_has_a_layer():
    lost = [m for m in _core_modules() if m != CORE and _layer_of(m) is None]
    assert not lost, f"give these core modules a layer in LAYERS ({__file__}): {lost}"


def test_stage_layers_import_only_downward():
    bad = []
    for module in _core_modules():
        own = _layer_of(module)
        for imp in imports_of(module):
            theirs = _layer_of(imp.target)
            if own is not None and theirs is not None and theirs > own:
                bad.append(f"{module} (layer {own}: {LAYERS[own][0][0]}) imports {imp.target} "
                           f"(layer {theirs}: {LAYERS[theirs][0][0]}) at {imp.where}")
    assert not bad, "an import goes up the stage layers:\n" + "\n".join(bad)


def _module_graph() -> dict[str, set[str]]:
    graph = {}
    for module in module_files():
        graph[module] = {imp.target for imp in imports_of(module)
                         if imp.function is None and not imp.type_only and imp.target in module_files()
                         and imp.target != module}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycles_at_module_level():
    graph = _module_graph()
    cycle = _find_cycle(graph)
    if cycle:
        steps = [next(i for i in imports_of(a) if i.target == b and i.function is None).where
                 for a, b in zip(cycle, cycle[1:])]
        pytest.fail("module-level import cycle:\n" + "\n".join(f"{a} -> {b}  [{w}]"
                                                                for a, b, w in zip(cycle, cycle[1:], steps)))


def test_modules_and_functions_stay_small():
    bad = []
    for module, path in module_files().items():
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            bad.append(f"{path.relative_to(ROOT)}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {module}.{node.name}: {length} lines "
                               f"(at most {MAX_FUNCTION_LINES})")
    assert not bad, "too big:\n" + "\n".join(bad)


def test_heavy_libraries_are_imported_only_where_used():
    """The same rule as ruff's TID253 in pyproject.toml, checked here too so it holds without ruff."""
    bad = [f"{imp.module} imports {imp.target} at {imp.where}"
           for module in module_files() for imp in imports_of(module)
           if imp.function is None and not imp.type_only and any(_under(imp.target, h) for h in HEAVY)]
    assert not bad, "import heavy libraries inside the functions that use them:\n" + "\n".join(bad)


def test_importing_the_whole_core_loads_no_qt_and_no_heavy_library():
    modules = _core_modules()
    script = ("import json, sys\n"
              f"for name in {modules!r}:\n"
              "    __import__(name)\n"
              f"print(json.dumps({{m: m in sys.modules for m in {NOT_AT_IMPORT_TIME!r}}}))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"importing the core failed:\n{done.stderr[-3000:]}"
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    culprits = [name for name, present in loaded.items() if present]
    assert not culprits, (f"importing the {len(modules)} core modules loaded {culprits}; import them inside "
                          "the functions that use them (find the importer with python -X importtime)")


def test_ruff_passes():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]'); the AST tests above check the same rules")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", PACKAGE], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"ruff check {PACKAGE}:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"


# ------------------------------------------------------------------------------------------ dependencies

def _declared_imports() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = set()
    for requirement in project["dependencies"]:
        dist = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0).lower()
        names.update(IMPORT_NAMES.get(dist, (dist.replace("-", "_"),)))
    return names


def test_every_third_party_import_is_declared():
    declared = _declared_imports()
    missing = sorted({(imp.target.split(".")[0], imp.where)
                      for module in module_files() for imp in imports_of(module)
                      if imp.target.split(".")[0] not in sys.stdlib_module_names | {PACKAGE, ""}
                      and imp.target.split(".")[0] not in declared})
    assert not missing, ("imported but not declared in pyproject.toml [project] dependencies (add the "
                         "distribution, or its name to IMPORT_NAMES):\n"
                         + "\n".join(f"{name} at {where}" for name, where in missing))


def test_a_model_family_is_registered_in_the_registry_and_the_backends_only():
    """A family = its ModelSpecs and hub file names (models/registry.py) + its builder (models/backends.py)."""
    from cellsearch_gui.core.models.backends import BUILDERS
    from cellsearch_gui.core.models.registry import HUB_FILES, REGISTRY

    for spec in REGISTRY.values():
        assert spec.family in BUILDERS, f"family '{spec.family}' of '{spec.id}' has no builder in backends.BUILDERS"
        assert not spec.hub_id or spec.family in HUB_FILES, (
            f"'{spec.id}' comes from the hub but family '{spec.family}' has no registry.HUB_FILES entry")
