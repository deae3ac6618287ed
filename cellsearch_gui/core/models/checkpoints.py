"""The weights directory: import, verify, download and safe loading of checkpoints.

Where a model's weights come from, in order: a file imported into the weights folder
(``cellsearch models import``), the Hugging Face cache (hub models), and, unless offline, a download
(hub models into the hub cache, URL models into the weights folder, each checked before use).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cellsearch_gui.core.errors import (
    CellSearchError,
    ChecksumMismatchError,
    WeightsMissingError,
)
from cellsearch_gui.core.io.checksums import sha256_of
from cellsearch_gui.core.io.user_dirs import user_dir
from cellsearch_gui.core.models import hub
from cellsearch_gui.core.models.integrity import (
    damaged_weights_error,
    file_sha256,
    regular_file_size,
    remember_sha256,
)
from cellsearch_gui.core.models.registry import ModelSpec, get_spec

WEIGHTS_ENV = "CELLSEARCH_WEIGHTS_DIR"


def weights_dir() -> Path:
    """The weights folder: $CELLSEARCH_WEIGHTS_DIR or the platform's user data folder."""

    if os.environ.get(WEIGHTS_ENV):
        return user_dir(WEIGHTS_ENV, "data")
    return user_dir(WEIGHTS_ENV, "data") / "weights"


def weights_path(spec: ModelSpec) -> Path:
    return weights_dir() / spec.filename


def _record_path(spec: ModelSpec) -> Path:
    # by file name: variants that share a checkpoint (dinov2_vitb14_clsmean) share its record
    return weights_dir() / f"{Path(spec.filename).stem}.json"


@dataclass
class WeightsStatus:
    spec: ModelSpec
    present: bool
    sha256: str | None
    verified: bool | None  # None: not checked (use verify=True)
    origin: str | None = None  # "imported" (weights folder) or "hub cache"
    path: Path | None = None

    @property
    def state(self) -> str:
        if not self.present:
            return "missing"
        if self.verified is None:
            return "present" if self.origin == "imported" else self.origin
        return "ok" if self.verified else "CHECKSUM MISMATCH"


def recorded_sha256(spec: ModelSpec) -> str | None:
    try:
        return json.loads(_record_path(spec).read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return None


def locate_weights(spec: ModelSpec) -> tuple[Path, str] | None:
    """The weights file to use and where it is ("imported" or "hub cache"); None when neither has it."""
    path = weights_path(spec)
    if path.is_file():
        return path, "imported"
    if path.is_symlink() and not path.exists():
        raise WeightsMissingError(f"{path}: a link to {os.readlink(path)}, which does not exist; import the "
                                  f"weights again with 'cellsearch models import {spec.id} FILE'")
    if os.path.lexists(path):  # a folder, device or pipe under the weights' name
        regular_file_size(path)
    cached = hub.cached_file(spec)
    return (cached, "hub cache") if cached is not None else None


def expected_sha256(spec: ModelSpec, path: Path, origin: str) -> str | None:
    if origin == "imported":
        return recorded_sha256(spec) or spec.sha256
    return hub.content_sha256(path)


def status(spec: ModelSpec, verify: bool = False) -> WeightsStatus:
    """What the weights folder holds for ``spec``; never raises (a folder or device under the weights'
    name is missing, an unreadable file fails ``verify``)."""
    try:
        found = locate_weights(spec)
    except CellSearchError:
        found = None
    if found is None:
        return WeightsStatus(spec, False, None, None)
    path, origin = found
    expected = expected_sha256(spec, path, origin)
    if not verify:
        return WeightsStatus(spec, True, expected, None, origin, path)
    try:
        actual = file_sha256(path, weights_dir(), refresh=True)  # every byte read again, the table refreshed
    except CellSearchError:
        return WeightsStatus(spec, True, None, False, origin, path)
    return WeightsStatus(spec, True, actual, actual == expected if expected else None, origin, path)


def weights_sha256(spec: ModelSpec, path: Path) -> str:
    """The sha256 of the weights as they are on disk now (the hash table spares re-reading an unchanged
    file): what identifies them in embedding-cache fingerprints, so repaired weights never meet vectors
    computed with damaged ones."""
    return file_sha256(path, weights_dir())


def check_weights(spec: ModelSpec, path: Path, origin: str) -> str:
    """The file's actual sha256, after checking it against the pinned, recorded or content-address hash;
    a mismatch is an error naming the file and the fix, before anything is computed with it."""
    actual = weights_sha256(spec, path)
    expected = expected_sha256(spec, path, origin)
    if expected and actual != expected:
        raise damaged_weights_error(path, spec.id, actual, expected, bool(spec.url or spec.hub_id),
                                    in_hub_cache=origin == "hub cache")
    return actual


def store_checkpoint(src: Path, spec: ModelSpec, digest: str) -> Path:
    dest_dir = weights_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{spec.id}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        if sha256_of(Path(tmp)) != digest:
            raise ChecksumMismatchError(f"copy of {src} changed while importing; try again")
        os.replace(tmp, weights_path(spec))
        remember_sha256(weights_path(spec), digest, dest_dir)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    record = {"id": spec.id, "sha256": digest, "source": str(src)}
    _record_path(spec).write_text(json.dumps(record, indent=1))
    return weights_path(spec)


def download_weights(model_id: str, progress=None) -> Path:
    """Download a model's checkpoint: hub models into the hub cache, URL models into the weights folder.

    A URL download goes to a temporary file that replaces the target only after its sha256 is checked
    (pinned models) or recorded; anything partial is deleted.
    """
    spec = get_spec(model_id)
    if spec.hub_id and not spec.url:
        return hub.fetch(spec)
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
        return store_checkpoint(Path(tmp), spec, digest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _tqdm_progress(spec: ModelSpec):
    from tqdm import tqdm

    bar = tqdm(desc=f"downloading {spec.id}", unit="B", unit_scale=True, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total or None
        bar.n = done
        bar.refresh()
        if total and done >= total:
            bar.close()

    return update


def require_weights(spec: ModelSpec, fetch: bool = True) -> Path:
    """The weights file for ``spec``, checked (``check_weights``): imported, else in the hub cache, else
    (online) downloaded now."""
    found = locate_weights(spec)
    if found is not None:
        check_weights(spec, *found)
        return found[0]
    where = str(weights_dir()) + (" nor in the Hugging Face cache" if spec.hub_id else "")
    how = f"'cellsearch models import {spec.id} FILE' ({spec.weights_source})"
    if hub.offline_mode() and (spec.hub_id or spec.url):
        raise WeightsMissingError(
            f"weights for '{spec.id}' are not in {where}, and offline mode is on (--offline, CELLSEARCH_OFFLINE "
            f"or HF_HUB_OFFLINE). On a PC with internet run 'cellsearch models download {spec.id}', "
            f"copy the checkpoint here and run {how}.")
    if fetch and (spec.hub_id or spec.url):
        return download_weights(spec.id, progress=None if spec.hub_id else _tqdm_progress(spec))
    dl = f"'cellsearch models download {spec.id}' or " if spec.url or spec.hub_id else ""
    raise WeightsMissingError(f"weights for '{spec.id}' are not in {where}. Get them with {dl}{how}.")


def readable_checkpoint(path: Path) -> Path:
    """``path``, once it is known to be a regular file (a folder, FIFO or device is refused unopened)."""
    regular_file_size(path, "checkpoint file")
    return Path(path)


def is_safetensors(path: Path) -> bool:
    """Recognise safetensors by content (8-byte little-endian header length, then a JSON object)."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 30)


def load_state_dict(path: Path) -> dict:
    """Load tensors only: safetensors, or torch.load with weights_only=True (no arbitrary pickles).

    The format is told from the content, so an imported file keeps working under the weights folder's name.
    """
    import torch

    path = readable_checkpoint(path)
    try:
        if path.suffix == ".safetensors" or is_safetensors(path):
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
    if isinstance(state, dict):  # metadata (ints, strings) beside the tensors is not part of the network
        state = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not isinstance(state, dict) or not state:
        raise CellSearchError(f"{path}: holds no state dict of tensors")
    if all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel / DDP training
    return state
