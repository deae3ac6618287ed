"""The weights directory: import, verify, download and safe loading of checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cellsearch_gui.core.errors import ChecksumMismatchError, CellSearchError, WeightsMissingError
from cellsearch_gui.core.registry import REGISTRY, ModelSpec, get_spec

WEIGHTS_ENV = "CELLSEARCH_WEIGHTS_DIR"


def weights_dir() -> Path:
    """The weights folder: $CELLSEARCH_WEIGHTS_DIR or the platform's user data folder."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("cellsearch", appauthor=False)) / "weights"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_path(spec: ModelSpec) -> Path:
    return weights_dir() / spec.filename


def _record_path(spec: ModelSpec) -> Path:
    return weights_dir() / f"{spec.id}.json"


@dataclass
class WeightsStatus:
    spec: ModelSpec
    present: bool
    sha256: str | None
    verified: bool | None  # None: not checked (use verify=True)

    @property
    def state(self) -> str:
        if not self.present:
            return "missing"
        if self.verified is None:
            return "present"
        return "ok" if self.verified else "CHECKSUM MISMATCH"


def recorded_sha256(spec: ModelSpec) -> str | None:
    try:
        return json.loads(_record_path(spec).read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return None


def status(spec: ModelSpec, verify: bool = False) -> WeightsStatus:
    path = weights_path(spec)
    if not path.is_file():
        return WeightsStatus(spec, False, None, None)
    expected = recorded_sha256(spec) or spec.sha256
    if not verify:
        return WeightsStatus(spec, True, expected, None)
    actual = sha256_of(path)
    return WeightsStatus(spec, True, actual, actual == expected)


def _atomic_copy_in(src: Path, spec: ModelSpec, digest: str) -> Path:
    dest_dir = weights_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{spec.id}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        if sha256_of(Path(tmp)) != digest:
            raise ChecksumMismatchError(f"copy of {src} changed while importing; try again")
        os.replace(tmp, weights_path(spec))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    record = {"id": spec.id, "sha256": digest, "source": str(src)}
    _record_path(spec).write_text(json.dumps(record, indent=1))
    return weights_path(spec)


def import_weights(model_id: str, file: str | Path, allow_unpinned: bool = False) -> Path:
    """Copy a checkpoint into the weights folder after checking its sha256 and that it loads."""
    spec = get_spec(model_id)
    src = Path(file)
    if not src.is_file():
        raise CellSearchError(f"{src}: no such checkpoint file")
    digest = sha256_of(src)
    if spec.sha256 and digest != spec.sha256 and not allow_unpinned:
        raise ChecksumMismatchError(
            f"{src}: sha256 {digest[:16]}... does not match the pinned checkpoint for "
            f"'{spec.id}' ({spec.sha256[:16]}...). This is a different or damaged file; "
            f"use --allow-unpinned only if you know it holds {spec.weights_source}."
        )
    from cellsearch_gui.core.backends import check_checkpoint_loads

    check_checkpoint_loads(spec, src)  # refuse files that do not load into the architecture
    return _atomic_copy_in(src, spec, digest)


def import_folder(folder: str | Path) -> list[tuple[str, Path]]:
    """Import every file in a folder whose sha256 matches a pinned checkpoint (USB-stick import)."""
    by_hash = {spec.sha256: spec for spec in REGISTRY.values() if spec.sha256}
    imported = []
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.stat().st_size > 1024:
            spec = by_hash.get(sha256_of(path))
            if spec is not None:
                imported.append((spec.id, import_weights(spec.id, path)))
    return imported


def download_weights(model_id: str, progress=None) -> Path:
    """Download a model's pinned checkpoint; the file is used only after its sha256 matches."""
    spec = get_spec(model_id)
    if not spec.url:
        raise WeightsMissingError(
            f"'{spec.id}' has no download address; get {spec.weights_source} and run "
            f"'cellsearch models import {spec.id} FILE'"
        )
    dest_dir = weights_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{spec.id}.", suffix=".download")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
        digest = sha256_of(Path(tmp))
        if spec.sha256 and digest != spec.sha256:
            raise ChecksumMismatchError(
                f"download of '{spec.id}' from {spec.url} has sha256 {digest[:16]}..., "
                f"expected {spec.sha256[:16]}...; the partial or wrong file was deleted"
            )
        return _atomic_copy_in(Path(tmp), spec, digest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def require_weights(spec: ModelSpec) -> Path:
    path = weights_path(spec)
    if not path.is_file():
        how = f"'cellsearch models download {spec.id}' or " if spec.url else ""
        raise WeightsMissingError(
            f"weights for '{spec.id}' are not in {weights_dir()}. Get them with {how}"
            f"'cellsearch models import {spec.id} FILE' ({spec.weights_source})."
        )
    return path


def load_state_dict(path: Path) -> dict:
    """Load tensors only: safetensors, or torch.load with weights_only=True (no arbitrary pickles)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a usable checkpoint"
        raise CellSearchError(f"{path}: not a loadable tensor checkpoint ({exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0][:200]})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise CellSearchError(f"{path}: holds no state dict of tensors")
    return state
