"""Hugging Face hub weights: looked up in, or downloaded into, huggingface_hub's own cache (the one timm,
open_clip and transformers share), with offline mode and a content check of every downloaded file.

huggingface_hub writes a download to ``blobs/<sha256>.incomplete`` and renames it only when complete, so an
interrupted download is never used. Large (LFS) files are stored under their sha256; a download whose
content does not match its name is deleted before anything reads it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cellsearch_gui.core.errors import ChecksumMismatchError, WeightsMissingError
from cellsearch_gui.core.io.checksums import sha256_of
from cellsearch_gui.core.models.registry import HUB_FILES, ModelSpec

OFFLINE_ENVS = ("CELLSEARCH_OFFLINE", "HF_HUB_OFFLINE")

_SHA256_NAME = re.compile(r"[0-9a-f]{64}")


def offline_mode() -> bool:
    """True when CELLSEARCH_OFFLINE or HF_HUB_OFFLINE is set (``--offline`` sets the first)."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in OFFLINE_ENVS)


def cached_file(spec: ModelSpec) -> Path | None:
    """The model's weights file in the hub cache, or None; never touches the network."""
    if not spec.hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for name in HUB_FILES[spec.family]:
        found = try_to_load_from_cache(spec.hub_id, name)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def content_sha256(path: Path) -> str | None:
    """The sha256 a hub cache file is stored under (its blob name), when it has one."""
    name = Path(path).resolve().name
    return name if _SHA256_NAME.fullmatch(name) else None


def check_content(spec: ModelSpec, path: Path) -> str | None:
    """Re-hash a fetched file against its content address; delete it when they differ."""

    expected = content_sha256(path)
    if expected is None:
        return None
    actual = sha256_of(path)
    if actual != expected:
        blob = Path(path).resolve()
        for item in (Path(path), blob):
            if item.is_symlink() or item.exists():
                item.unlink()
        raise ChecksumMismatchError(
            f"download of '{spec.id}' from the Hugging Face hub ({spec.hub_id}) is damaged: sha256 "
            f"{actual[:16]}... instead of {expected[:16]}...; the file was deleted, run it again")
    return actual


def fetch(spec: ModelSpec) -> Path:
    """Download the model's weights through huggingface_hub (progress bar on stderr) and check them."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    if offline_mode():
        raise WeightsMissingError(f"'{spec.id}' is not in the Hugging Face cache and offline mode is on; "
                                  f"run 'cellsearch models import {spec.id} FILE'")
    for name in HUB_FILES[spec.family]:
        try:
            path = Path(hf_hub_download(spec.hub_id, name, library_name="cellsearch"))
        except RemoteEntryNotFoundError:
            continue  # the repository publishes the other format
        except Exception as exc:  # noqa: BLE001 - network, auth, disk: all mean "not fetched"
            raise WeightsMissingError(
                f"download of '{spec.id}' from the Hugging Face hub ({spec.hub_id}) failed "
                f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); nothing "
                f"partial is kept. Run it again, or copy the weights from another PC and run "
                f"'cellsearch models import {spec.id} FILE'") from None
        check_content(spec, path)
        return path
    raise WeightsMissingError(f"{spec.hub_id} on the Hugging Face hub has none of "
                              f"{', '.join(HUB_FILES[spec.family])}; import the weights with "
                              f"'cellsearch models import {spec.id} FILE'")
