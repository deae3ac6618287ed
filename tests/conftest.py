import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # an accidental hub call fails at once
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CELLSEARCH_SHARED", REPO.parent / "shared"))
SHARED_MODELS = SHARED / "models"
PBC = SHARED / "data" / "pbc_barcelona"
BCCD_WBC = SHARED / "data" / "bccd_wbc"
WBC5 = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]

needs_shared = pytest.mark.skipif(not (SHARED_MODELS.is_dir() and PBC.is_dir()),
                                  reason=f"shared models/data not found at {SHARED}")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Each test gets its own weights folder and embedding cache; nothing touches the user's."""
    base = tmp_path_factory.mktemp("cs")
    monkeypatch.setenv("CELLSEARCH_WEIGHTS_DIR", str(base / "weights"))
    monkeypatch.setenv("CELLSEARCH_CACHE_DIR", str(base / "cache"))
    yield
    workers = sys.modules.get("cellsearch_gui.gui.workers")
    if workers is not None:  # a window's device probe imports torch on its own thread: let it finish, or
        workers.HEAVY_IMPORTS_DONE.wait(120)  # the next test's import of torchvision races it


@pytest.fixture(scope="session")
def session_weights(tmp_path_factory):
    """Real checkpoints imported once through `models import` into a session weights folder."""
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"no shared models at {SHARED_MODELS}")

    folder = tmp_path_factory.mktemp("weights")
    old = os.environ.get("CELLSEARCH_WEIGHTS_DIR")
    os.environ["CELLSEARCH_WEIGHTS_DIR"] = str(folder)
    try:
        from cellsearch_gui.core.models import install

        imported = install.import_folder(SHARED_MODELS)
    finally:
        if old is None:
            del os.environ["CELLSEARCH_WEIGHTS_DIR"]
        else:
            os.environ["CELLSEARCH_WEIGHTS_DIR"] = old
    assert {m for m, _ in imported} >= {"mobilenetv2", "efficientnet_lite0"}
    return folder


@pytest.fixture
def real_weights(session_weights, monkeypatch):
    monkeypatch.setenv("CELLSEARCH_WEIGHTS_DIR", str(session_weights))
    return session_weights


def make_subset(src: Path, dest: Path, classes, per_class: int, offset: int = 0) -> Path:
    """Copy a few real crops per class into DIR/<class>/ (a small, deterministic dataset)."""
    for cls in classes:
        files = sorted((src / cls).iterdir())[offset : offset + per_class]
        (dest / cls).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, dest / cls / f.name)
    return dest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    """The main window with an empty, private configuration; shut down (job stopped, project released) after."""
    monkeypatch.setenv("CELLSEARCH_CONFIG_DIR", str(tmp_path / "config"))
    from cellsearch_gui.gui.app import create_window

    win = create_window()
    win.show_dialogs = False
    qtbot.addWidget(win)
    win.show()
    yield win
    win.controller.shutdown()


def write_crop(path: Path, value: int = 200) -> Path:
    """A small uniform RGB crop at ``path`` (folders made)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def file_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes: compare two to see what changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def colour_class_folders(folder: Path, classes: dict[str, tuple[int, int, int]], per_class: int, seed: int) -> Path:
    """``folder/<class>/<i>.png``: 48x48 noisy crops around one colour per class, a library any model separates."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            image = np.clip(rng.normal(colour, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / name / f"{i}.png")
    return folder
