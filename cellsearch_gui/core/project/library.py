"""A labelled reference library as a portable folder: DIR/<class>/<crop> plus library.json (device, pixel
size, provenance, the device of each cell) and, once embedded, each model's features in DIR/_features (see
embedding/library_features), so a library built on one microscope classifies images from another and loading
it embeds nothing."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from cellsearch_gui import __version__
from cellsearch_gui.core.errors import DatasetError
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions, embed_crops
from cellsearch_gui.core.embedding.library_features import write_features
from cellsearch_gui.core.io.atomic import disk_errors, write_text_atomic
from cellsearch_gui.core.io.checksums import content_key
from cellsearch_gui.core.io.dataset import load_reference, scan_class_folders
from cellsearch_gui.core.io.safe_paths import SafeWriter, safe_component, short_hash
from cellsearch_gui.core.jobs import CancelToken, Job

LIBRARY_FILE = "library.json"


def export_library(workspace, out_dir, device: str | None = None) -> dict:
    """Reference folders plus the cells the user labelled, copied into one class-per-folder library; each
    cell keeps the device of its source (a source library's own, else ``device``, else the source's name)."""

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: the folder is not empty; choose a new one")
    entries = []  # (source file, label, device)
    for folder in workspace.reference_dirs:
        ref, devices = load_reference([folder]), cell_devices(folder, default=device)
        entries += [(str(p), label, devices.get(relative_name(folder, p), devices[""]))
                    for p, label in zip(ref.paths, ref.labels)]
    cells = {c.cell_id: c for c in (workspace.store.cells() if workspace.store else workspace.cells)}
    entries += [(cells[uid].crop_path, label, device or out.name)
                for uid, label in sorted(workspace.user_labels.items()) if uid in cells]
    counts: dict[str, int] = {}
    listed = []
    files = SafeWriter(out)
    with disk_errors(out, "export the library"):
        for number, (src, label, source_device) in enumerate(entries):
            name = Path(src)
            written = files.copy(src, (class_folder(label),), f"{number:06d}_{name.stem}", name.suffix)
            counts[class_folder(label)] = counts.get(class_folder(label), 0) + 1
            listed.append({"file": relative_name(out, written), "class": label, "device": source_device})
    info = {"format": 1, "device": device, "pixel_size_um": workspace.settings.reference_pixel_size_um,
            "classes": counts, "app_version": __version__,
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sources": list(workspace.reference_dirs),
            "labelled_in_app": sum(1 for uid in workspace.user_labels if uid in cells),
            "cells": listed}
    write_text_atomic(out / LIBRARY_FILE, json.dumps(info, indent=1))
    return info


def relative_name(library, path) -> str:
    return Path(path).relative_to(library).as_posix()


def cell_devices(folder, default: str | None = None) -> dict[str, str]:
    """{crop path relative to the library: device}, with "" for cells library.json does not list: the
    library's device, else ``default``, else the folder's name."""
    info = read_library_info(folder)
    fallback = info.get("device") or default or Path(folder).resolve().name
    listed = info.get("cells") if isinstance(info.get("cells"), list) else []
    devices = {cell["file"]: str(cell.get("device") or fallback) for cell in listed
               if isinstance(cell, dict) and isinstance(cell.get("file"), str)}
    return {**devices, "": fallback}


def crop_devices(paths) -> list[str]:
    """The device of each library crop (DIR/<class>/<crop>): as DIR/library.json lists it, else the
    library's device, else the library folder's name."""
    by_library: dict[Path, dict[str, str]] = {}
    out = []
    for path in map(Path, paths):
        library = path.parent.parent
        if library not in by_library:
            by_library[library] = cell_devices(library)
        devices = by_library[library]
        out.append(devices.get(relative_name(library, path), devices[""]))
    return out


def rows_of_device(paths, device: str | None) -> list[int]:
    """Rows of the library crops that come from ``device`` (None or "": none)."""
    return [] if not device else [i for i, name in enumerate(crop_devices(paths)) if name == device]


def library_devices(folders) -> list[str]:
    """The devices the cells of these libraries come from (library.json, else each folder's name), sorted;
    a library whose description cannot be read is left out."""
    found: set[str] = set()
    for folder in folders:
        try:
            found.update(cell_devices(folder).values())
        except DatasetError:
            continue
    return sorted(found)


def device_note(paths, device: str, rows: list[int]) -> str:
    """What the library's cells of the query device are, in words."""
    if rows:
        return f"{len(rows)} library cells come from device '{device}': they vote as that device's labelled cells"
    known = ", ".join(sorted(set(crop_devices(paths))))
    return f"no library cell comes from device '{device}' (the library's devices: {known}): it votes as for a new device"


def embed_library(folder, models: list[str], options: EmbedOptions, cache: EmbeddingCache,
                  token: CancelToken | None = None) -> Job[dict]:
    """Embed a library's crops with each model (stored features and the cache first) and keep the vectors in
    the library (DIR/_features, listed in library.json), so loading it with these settings embeds nothing."""
    folder = Path(folder)
    crops = scan_class_folders(folder)
    features = yield from embed_crops(crops, models, cache, options, token)
    keys = [content_key(path) for path in features.paths]
    info = read_library_info(folder) or {"format": 1, "device": None, "pixel_size_um": None}
    devices = cell_devices(folder)  # the cells now in the folder, each keeping a device listed before
    info["cells"] = [{"file": (name := relative_name(folder, p)), "class": label,
                      "device": devices.get(name, devices[""])} for p, label in zip(crops.paths, crops.labels)]
    info["classes"] = crops.counts()
    stored = {entry["file"]: entry for entry in info.get("features", []) if isinstance(entry, dict)}
    with disk_errors(folder, "store the library's features"):
        for model in features.model_ids:
            path = write_features(folder, features.fingerprints[model], dict(zip(keys, features.per_model[model])))
            stored[relative_name(folder, path)] = {"file": relative_name(folder, path), "model": model,
                                                   "fingerprint": features.fingerprints[model], "cells": len(keys)}
    info["features"] = sorted(stored.values(), key=lambda entry: entry["file"])
    info["notes"] = features.notes + [f"{p}: {why}" for p, why in features.skipped]
    write_text_atomic(folder / LIBRARY_FILE, json.dumps(info, indent=1))
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
