"""Features that travel with a reference library: ``LIBRARY/_features/<model>-<hash>.npz``, one file per model
fingerprint (model id, weights checksum, crop recipe: the embedding cache's key), holding the crops' content
keys (sha256) and their vectors. The folder starts with '_', so it is never read as a class.

Embedding a library's crops takes these vectors where the fingerprint and the crop's content match, and
embeds the rest, saying why (``LibraryFeatures.notes``)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from cellsearch_gui.core.io.atomic import atomic_open

FEATURES_DIR = "_features"


def feature_file_name(fingerprint: str) -> str:
    model = fingerprint.split("|", 1)[0]
    return f"{model}-{hashlib.sha256(fingerprint.encode('utf-8')).hexdigest()[:16]}.npz"


def model_of(fingerprint: str) -> str:
    return fingerprint.split("|", 1)[0]


def write_features(library: Path, fingerprint: str, vectors: dict[str, np.ndarray]) -> Path:
    """Write (atomically) one model's vectors of a library's crops, keyed by crop content; returns the file."""
    path = Path(library) / FEATURES_DIR / feature_file_name(fingerprint)
    keys = sorted(vectors)
    stacked = np.stack([np.asarray(vectors[k], np.float32) for k in keys]) if keys else np.zeros((0, 0), np.float32)
    with atomic_open(path, "wb") as handle:
        np.savez(handle, fingerprint=np.array(fingerprint), keys=np.array(keys, dtype="U64"), vectors=stacked)
    return path


def read_features(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """(fingerprint, {content key: vector}); ValueError when the file is damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            fingerprint, keys, vectors = str(data["fingerprint"]), data["keys"], data["vectors"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: unreadable feature file ({exc})") from None
    if vectors.ndim != 2 or len(keys) != len(vectors):
        raise ValueError(f"{path}: {len(keys)} keys for {len(vectors)} vectors")
    return fingerprint, dict(zip(map(str, keys), vectors.astype(np.float32, copy=False)))


def stored_fingerprint(path: Path) -> str | None:
    """The fingerprint a feature file was made with (only that array is read); None when unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return str(data["fingerprint"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def feature_files(library: Path) -> list[Path]:
    folder = Path(library) / FEATURES_DIR
    return sorted(folder.glob("*.npz")) if folder.is_dir() else []


def libraries_of(paths) -> list[Path]:
    """The library folders (LIBRARY/<class>/<crop>) among these crops' grandparents that carry features."""
    roots = {Path(p).parent.parent for p in paths}
    return sorted(root for root in roots if (root / FEATURES_DIR).is_dir())


class LibraryFeatures:
    """The stored features of the libraries a crop set comes from, looked up by model fingerprint."""

    def __init__(self, paths):
        self.libraries = libraries_of(paths)
        self.notes: list[str] = []
        self.used: dict[str, int] = {}  # model id: vectors taken from libraries

    def fill(self, fingerprint: str, wanted: list[str], found: dict[str, np.ndarray]) -> None:
        """Put the stored vectors of ``wanted`` keys that ``found`` lacks into it; a note when a library holds
        this model's features for another fingerprint (other weights or crop preparation)."""
        model = model_of(fingerprint)
        missing = {k for k in wanted if k not in found}
        for library in self.libraries:
            if not missing:
                break
            files = {path: stored_fingerprint(path) for path in feature_files(library)
                     if path.name.startswith(f"{model}-")}
            matching = [path for path, stored in files.items() if stored == fingerprint]
            if not matching:
                if files:
                    self.notes.append(f"{library}: its stored {model} features were made with other weights or "
                                      "another crop preparation; its cells are embedded now")
                continue
            try:
                _, stored = read_features(matching[0])
            except ValueError as exc:
                self.notes.append(f"{exc}; its cells are embedded now")
                continue
            taken = {k: stored[k] for k in missing if k in stored}
            found.update(taken)
            missing -= set(taken)
            self.used[model] = self.used.get(model, 0) + len(taken)
