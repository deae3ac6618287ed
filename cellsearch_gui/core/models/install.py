"""Importing checkpoints from files and folders (USB stick), checked before use."""

from __future__ import annotations

from pathlib import Path

from cellsearch_gui.core.errors import CellSearchError, ChecksumMismatchError
from cellsearch_gui.core.io.checksums import sha256_of
from cellsearch_gui.core.jobs import CancelToken, Job, Progress, run_job
from cellsearch_gui.core.models.backends import check_checkpoint_loads
from cellsearch_gui.core.models.checkpoints import store_checkpoint
from cellsearch_gui.core.models.integrity import hash_file
from cellsearch_gui.core.models.registry import HUB_FILES, REGISTRY, ModelSpec, get_spec

_FOLDER_WEIGHTS = tuple(dict.fromkeys(name for names in HUB_FILES.values() for name in names))


def weights_file_in(folder: Path, spec: ModelSpec) -> Path:
    """The weights file of a saved model folder (transformers save_pretrained, a hub snapshot)."""
    for name in _FOLDER_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    if any(folder.glob("*.index.json")):
        raise CellSearchError(f"{folder}: a sharded checkpoint; save it as one file "
                              f"(save_pretrained(..., max_shard_size='20GB')) and import that for '{spec.id}'")
    files = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pth", ".pt") and p.is_file()]
    if len(files) != 1:
        raise CellSearchError(f"{folder}: expected one weights file ({', '.join(_FOLDER_WEIGHTS[:2])}, .pth) "
                              f"for '{spec.id}', found {len(files)}")
    return files[0]


def import_weights(model_id: str, file: str | Path, allow_unpinned: bool = False) -> Path:
    """Copy a checkpoint into the weights folder after checking its sha256 and that it loads.

    ``file`` is the family's native checkpoint (timm/torch state dict .pth/.bin/.safetensors, OpenCLIP
    checkpoint, SAM .pth) or a saved model folder (transformers ``save_pretrained``); without a pinned
    sha256 the file's own hash is recorded and checked by ``models verify`` from then on.
    """
    spec = get_spec(model_id)
    src = Path(file)
    if src.is_dir():
        src = weights_file_in(src, spec)
    digest = hash_file(src, "checkpoint file")  # refuses folders, devices and pipes with a message
    if spec.sha256 and digest != spec.sha256 and not allow_unpinned:
        raise ChecksumMismatchError(
            f"{src}: sha256 {digest[:16]}... does not match the pinned checkpoint for "
            f"'{spec.id}' ({spec.sha256[:16]}...). This is a different or damaged file; "
            f"use --allow-unpinned only if you know it holds {spec.weights_source}."
        )

    check_checkpoint_loads(spec, src)  # refuse files that do not load into the architecture
    return store_checkpoint(src, spec, digest)


def import_folder(folder: str | Path) -> list[tuple[str, Path]]:
    """Import every file in a folder whose sha256 matches a pinned checkpoint (USB-stick import)."""
    return run_job(import_folder_job(folder))


def import_folder_job(folder: str | Path, token: CancelToken | None = None) -> Job[list[tuple[str, Path]]]:
    """``import_folder`` as a job: one step per file (hashing a checkpoint takes seconds), cancel between."""
    by_hash = {spec.sha256: spec for spec in REGISTRY.values() if spec.sha256}
    files = [p for p in sorted(Path(folder).iterdir()) if p.is_file() and p.stat().st_size > 1024]
    imported = []
    for number, path in enumerate(files):
        if token is not None:
            token.raise_if_cancelled()
        yield Progress("importing weights", number, len(files), path.name)
        try:
            spec = by_hash.get(sha256_of(path))  # regular files only (is_file above)
        except OSError as exc:
            raise CellSearchError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
        if spec is not None:
            imported.append((spec.id, import_weights(spec.id, path)))
    yield Progress("importing weights", len(files), len(files))
    return imported
