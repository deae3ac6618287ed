"""A labelled reference library as a portable folder: DIR/<class>/<crop> plus library.json (device, pixel
size, provenance), so a library built on one microscope classifies images from another."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from cellsearch_gui import __version__
from cellsearch_gui.core.errors import DatasetError
from cellsearch_gui.core.io.atomic import disk_errors, write_text_atomic
from cellsearch_gui.core.io.dataset import load_reference
from cellsearch_gui.core.io.safe_paths import SafeWriter, safe_component, short_hash

LIBRARY_FILE = "library.json"


def export_library(workspace, out_dir, device: str | None = None) -> dict:
    """Reference folders plus the cells the user labelled, copied into one class-per-folder library."""

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: the folder is not empty; choose a new one")
    entries = []
    if workspace.reference_dirs:
        ref = load_reference(workspace.reference_dirs)
        entries += list(zip(map(str, ref.paths), ref.labels))
    cells = {c.cell_id: c for c in (workspace.store.cells() if workspace.store else workspace.cells)}
    entries += [(cells[uid].crop_path, label) for uid, label in sorted(workspace.user_labels.items()) if uid in cells]
    counts: dict[str, int] = {}
    files = SafeWriter(out)
    with disk_errors(out, "export the library"):
        for number, (src, label) in enumerate(entries):
            name = Path(src)
            files.copy(src, (class_folder(label),), f"{number:06d}_{name.stem}", name.suffix)
            counts[class_folder(label)] = counts.get(class_folder(label), 0) + 1
    info = {"format": 1, "device": device, "pixel_size_um": workspace.settings.reference_pixel_size_um,
            "classes": counts, "app_version": __version__,
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sources": list(workspace.reference_dirs),
            "labelled_in_app": sum(1 for uid in workspace.user_labels if uid in cells)}
    write_text_atomic(out / LIBRARY_FILE, json.dumps(info, indent=1))
    return info


def class_folder(label: str) -> str:
    """The folder of a class in an exported library: a safe name that is never library.json itself."""
    folder = safe_component(label)
    return f"{folder}-{short_hash(label)}" if folder.casefold() == LIBRARY_FILE else folder


def read_library_info(folder) -> dict:
    """library.json of an exported library ({} for a plain class-per-folder directory)."""
    path = Path(folder) / LIBRARY_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetError(f"{path}: unreadable library description ({exc})") from None
    if not isinstance(info, dict) or info.get("format", 1) > 1:
        raise DatasetError(f"{path}: a library format this CellSearch does not know; update CellSearch")
    return info
