"""The wheels the GPU image lacks, worked out from pyproject, downloaded for cp312 manylinux and proven
complete in a clean Python 3.12 venv (``gpu_check.sh stage`` runs the three steps).

    python benchmarks/gpu_carry.py resolve VENV REQS    # VENV: a clean 3.12 venv; writes REQS (name==version)
    python benchmarks/gpu_carry.py verify               # run inside VENV after installing the wheels there

The image is assumed to hold only ``IMAGE_PACKAGES`` (a CUDA torch build with torchvision and timm, numpy):
every other runtime dependency, transitive ones included, is carried. Stub distributions stand in for the
image's packages during resolution and checking, so nothing of torch's 3 GB is downloaded here.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import json
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE_LIST = REPO / "benchmarks" / "gpu_image_packages.txt"
# import names that differ from the distribution's name
MODULE_OF = {"opencv-python-headless": "cv2", "scikit-learn": "sklearn", "scikit-image": "skimage", "pillow": "PIL",
             "pyyaml": "yaml", "python-dateutil": "dateutil", "protobuf": "google", "pytorch-lightning": "pytorch_lightning"}


def image_packages() -> dict[str, str]:
    """What the GPU image is assumed to have (name -> version for its stub; '999' where none is known)."""
    found = {}
    for line in IMAGE_LIST.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            found[name] = version or "999"
    return found


IMAGE_PACKAGES = image_packages()
IMAGE_MODULES = {MODULE_OF.get(name, name.replace("-", "_")) for name in IMAGE_PACKAGES}
NOT_ON_THE_GPU = {"pyside6-essentials", "pyqtgraph"}  # the window is not run there
EXTRA_CARRIED: list[str] = []  # the image has pytest for tests/test_gpu.py
# scripts that need the window or the cluster extra: not run on the GPU machine, not checked
SKIPPED_ROOTS = {"PySide6", "pyqtgraph", "ray", "pytestqt"}


def _name(requirement: str) -> str:
    for stop in "=<>!~;[ ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")


def runtime_requirements() -> list[str]:
    """pyproject's dependencies the image lacks (the GUI's left out), plus what the GPU run itself uses. A
    package the image has is used in the image's version (pins are for the desktop install)."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    skip = set(IMAGE_PACKAGES) | NOT_ON_THE_GPU
    return [d.split(";")[0].strip() for d in deps if _name(d) not in skip] + EXTRA_CARRIED


def write_stubs(site: Path) -> None:
    """Metadata-only distributions for the image's packages not installed for real: pip treats them as
    installed."""
    for name, version in IMAGE_PACKAGES.items():
        stem = name.replace("-", "_")  # a dist-info folder's name: dashes would split name from version
        if any(site.glob(f"{stem}-*.dist-info")) or any(site.glob(f"{name}-*.dist-info")):
            continue
        info = site / f"{stem}-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("gpu_carry-stub\n")
        (info / "RECORD").write_text("")


def site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.check_output([python, "-c", code], text=True).strip())


def resolve(venv: Path, out: Path) -> None:
    """name==version of every distribution pip would add to the image (stubs in place, nothing installed)."""
    python = venv / "bin" / "python"
    write_stubs(site_packages(python))
    report = out.with_suffix(".report.json")
    subprocess.run([python, "-m", "pip", "install", "-q", "--dry-run", "--only-binary=:all:", "--report", report,
                    *runtime_requirements()], check=True)
    pins = sorted(f"{item['metadata']['name']}=={item['metadata']['version']}"
                  for item in json.loads(report.read_text())["install"])
    stray = [p for p in pins if _name(p) in IMAGE_PACKAGES or _name(p).startswith("nvidia-")]
    if stray:  # a carried package wants a newer one than the image's: carried too, said aloud
        print(f"carried beside the image's own version: {', '.join(stray)}")
    out.write_text("\n".join(pins) + "\n")
    print(f"{len(pins)} distributions to carry -> {out}")


def _core_modules() -> list[str]:
    import cellsearch_gui.core as core

    return [m.name for m in pkgutil.walk_packages(core.__path__, "cellsearch_gui.core.")]


def _needs_image(exc: BaseException) -> bool:
    return isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in IMAGE_MODULES


def _carried_modules() -> dict[str, str]:
    """Top-level import names of the distributions installed from the carried wheels (module -> dist)."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        if (dist.read_text("INSTALLER") or "").strip() == "gpu_carry-stub":
            continue
        for file in dist.files or []:
            top = file.parts[0]
            if top.endswith((".dist-info", ".data", ".libs")) or top.startswith(("_", ".")) or "-" in top:
                continue
            name = top[:-3] if top.endswith(".py") else top
            if (top.endswith(".py") or len(file.parts) > 1) and name.isidentifier() and name not in ("pip", "setuptools"):
                found.setdefault(name, dist.metadata["Name"])
    return found


def _script_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def _local_names() -> set[str]:
    return {p.stem for p in (REPO / "benchmarks").glob("*.py")} | {p.stem for p in (REPO / "tests").glob("*.py")}


def gpu_scripts() -> list[Path]:
    """The scripts gpu_check.sh runs, and the local modules they import (followed)."""
    import re

    text = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    todo = [REPO / p for p in re.findall(r"((?:benchmarks|tests)/\w+\.py)", text)] + [REPO / "tests" / "conftest.py"]
    local = {p.stem: p for folder in ("benchmarks", "tests") for p in (REPO / folder).glob("*.py")}
    seen: dict[Path, None] = {}
    while todo:
        script = todo.pop()
        if script in seen or not script.is_file():
            continue
        seen[script] = None
        todo += [local[root] for root in _script_roots(script) if root in local]
    return sorted(seen)


def verify() -> int:
    """Import every core module and every carried package; every import of the GPU scripts must resolve.
    Only a missing torch/torchvision/timm (the image's) is allowed."""
    problems: list[str] = []
    for name in _core_modules():
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            if not _needs_image(exc):
                problems.append(f"{name}: {exc.__class__.__name__}: {exc}")
    carried = _carried_modules()
    for name, dist in sorted(carried.items()):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            if not _needs_image(exc):
                problems.append(f"{name} (from {dist}): {exc.__class__.__name__}: {exc}")
    scripts = gpu_scripts()
    local = _local_names() | {"cellsearch_gui"}
    checked = 0
    for script in scripts:
        roots = _script_roots(script)
        if roots & SKIPPED_ROOTS:
            continue
        checked += 1
        for root in sorted(roots - local - IMAGE_MODULES - set(sys.stdlib_module_names) - {"__future__"}):
            if importlib.util.find_spec(root) is None:
                problems.append(f"{script.relative_to(REPO)}: imports '{root}', which nothing carried provides")
    print(f"{len(_core_modules())} core modules, {len(carried)} carried packages, {checked} scripts checked")
    for line in problems:
        print("MISSING:", line)
    return 1 if problems else 0


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "resolve":
        resolve(Path(sys.argv[2]), Path(sys.argv[3]))
    elif command == "stubs":
        write_stubs(site_packages(Path(sys.executable)))
    elif command == "verify":
        sys.exit(verify())
    else:
        sys.exit(__doc__)
