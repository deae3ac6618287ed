"""Hostile weights files: damaged, replaced, malicious, special or unreadable checkpoints. Each gives a clear
message naming the file (a CellSearchError, never a traceback) and nothing hangs or runs a payload."""

import hashlib
import json
import os
import shutil
import struct

import pytest
import torch
from conftest import SHARED_MODELS
from zoo_helpers import hub_cache, put_in_hub_cache, tiny_registry  # noqa: F401 - fixtures

from cellsearch_gui.core.errors import CellSearchError, ChecksumMismatchError, WeightsMissingError
from cellsearch_gui.core.models import checkpoints, install, integrity
from cellsearch_gui.core.models.backends import build_model
from cellsearch_gui.core.models.registry import get_spec

pytestmark = pytest.mark.timeout(60)
MODEL = "mobilenetv2"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def stored(tmp_path):
    """A small tensor file installed as MODEL's weights (recorded hash, as after an import)."""
    src = tmp_path / "small.pth"
    torch.save({"w": torch.arange(8192, dtype=torch.float32)}, src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    return checkpoints.store_checkpoint(src, get_spec(MODEL), digest)


def check() -> str:
    path = checkpoints.require_weights(get_spec(MODEL), fetch=False)
    return checkpoints.weights_sha256(get_spec(MODEL), path)


def refused(match: str, error=CellSearchError):
    return pytest.raises(error, match=match)


def evil_pickle(path, marker):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"weight": Evil()}, path)
    return path


def safetensors_bytes(header: bytes, body: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + body


# ------------------------------------------------------------------------ damaged weights at load time

def test_intact_weights_pass_and_give_the_recorded_hash(stored):
    assert check() == checkpoints.recorded_sha256(get_spec(MODEL))


@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_truncated_weights_are_refused(stored, keep):
    os.truncate(stored, int(stored.stat().st_size * keep))
    with refused(f"{stored}.*damaged.*cellsearch models import {MODEL} FILE", ChecksumMismatchError):
        check()


def test_zero_byte_weights_are_refused(stored):
    stored.write_bytes(b"")
    with refused("damaged or were replaced", ChecksumMismatchError):
        check()


@pytest.mark.parametrize("where", ["first", "second", "middle", "last", "last_4kb"])
def test_bit_flips_anywhere_are_refused(stored, where):
    size = stored.stat().st_size
    offset = {"first": 0, "second": 1, "middle": size // 2, "last": size - 1, "last_4kb": size - 4096}[where]
    data = bytearray(stored.read_bytes())
    for i in range(offset, min(size, offset + (4096 if where == "last_4kb" else 1))):
        data[i] ^= 0x01
    stored.write_bytes(bytes(data))
    with refused("damaged", ChecksumMismatchError):
        check()


def test_grown_weights_are_refused(stored):
    with open(stored, "ab") as handle:
        handle.write(b"\0" * 100)
    with refused("damaged", ChecksumMismatchError):
        check()


def test_replaced_under_the_same_size_and_mtime_is_seen(stored):
    """Another file moved over the weights with the old mtime put back: a new inode and ctime."""
    check()
    info = stored.stat()
    other = stored.with_name("other.tmp")
    other.write_bytes(bytes(info.st_size))
    os.utime(other, ns=(info.st_atime_ns, info.st_mtime_ns))
    os.replace(other, stored)
    with refused("damaged", ChecksumMismatchError):
        check()


def test_rewritten_in_place_under_the_same_mtime_is_seen(stored):
    check()
    info = stored.stat()
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF
    with open(stored, "r+b") as handle:
        handle.write(bytes(data))
    os.utime(stored, ns=(info.st_atime_ns, info.st_mtime_ns))
    with refused("damaged", ChecksumMismatchError):
        check()


def test_documented_limit_identical_metadata_needs_models_verify(stored, monkeypatch):
    """The limit: damage that leaves size, mtime, ctime and inode unchanged (below the file system) is not
    seen by the cached check; `models verify` reads every byte and reports it."""
    check()
    signature = integrity._signature(stored)
    data = bytearray(stored.read_bytes())
    data[200] ^= 0xFF
    stored.write_bytes(bytes(data))
    monkeypatch.setattr(integrity, "_signature", lambda path: signature)
    check()  # trusted from the table: the documented limit
    assert checkpoints.status(get_spec(MODEL), verify=True).state == "CHECKSUM MISMATCH"
    with refused("damaged", ChecksumMismatchError):
        check()  # verify refreshed the table


def test_second_load_reads_the_table_not_the_file(stored, monkeypatch):
    calls = []
    real = integrity.hash_file
    monkeypatch.setattr(integrity, "hash_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    os.utime(stored)  # not the import's entry: hashed once, then from the table
    check()
    check()
    assert len(calls) == 1
    assert json.loads((stored.parent / integrity.HASH_TABLE).read_text())


@pytest.mark.parametrize("garbage", [b"\xff\xfe not json", b"[1, 2, 3]", b'{"x": {"signature": 5}}'])
def test_a_damaged_hash_table_only_means_hashing_again(stored, garbage):
    (stored.parent / integrity.HASH_TABLE).write_bytes(garbage)
    assert check() == checkpoints.recorded_sha256(get_spec(MODEL))


@pytest.mark.skipif(IS_ROOT, reason="root ignores permissions")
def test_a_read_only_weights_folder_still_checks(stored):
    (stored.parent / integrity.HASH_TABLE).unlink()
    stored.parent.chmod(0o555)
    try:
        assert check() == checkpoints.recorded_sha256(get_spec(MODEL))
    finally:
        stored.parent.chmod(0o755)


def test_unreadable_weights_give_a_message(stored):
    stored.chmod(0)
    try:
        if os.access(stored, os.R_OK):
            pytest.skip("chmod has no effect here (root)")
        with refused(f"{stored}: cannot read"):
            check()
    finally:
        stored.chmod(0o644)


# ------------------------------------------------------------------ special files where weights belong

def test_a_folder_under_the_weights_name(tmp_path):
    path = checkpoints.weights_path(get_spec(MODEL))
    path.mkdir(parents=True)
    with refused("is a folder, not a weights file"):
        check()


def test_a_symlink_to_dev_zero_as_weights_does_not_hang(tmp_path):
    path = checkpoints.weights_path(get_spec(MODEL))
    path.parent.mkdir(parents=True)
    path.symlink_to("/dev/zero")
    with refused("not a regular file"):
        check()


def test_a_fifo_as_weights_does_not_hang(tmp_path):
    path = checkpoints.weights_path(get_spec(MODEL))
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    with refused("not a regular file"):
        check()


def test_a_dangling_link_as_weights(tmp_path):
    path = checkpoints.weights_path(get_spec(MODEL))
    path.parent.mkdir(parents=True)
    path.symlink_to(tmp_path / "gone.pth")
    with refused("which does not exist.*models import", WeightsMissingError):
        check()


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "folder"])
def test_special_files_are_refused_unopened_by_import_and_loading(tmp_path, kind):
    path = tmp_path / "ckpt.pth"
    if kind == "dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    with refused(str(path)):
        checkpoints.load_state_dict(path)
    with refused(str(path)):
        install.import_weights(MODEL, path, allow_unpinned=True)
    with refused(str(path)):
        integrity.hash_file(path)


# --------------------------------------------------------------------------- malicious and bad formats

def test_os_system_pickle_is_refused_by_the_loader(tmp_path):
    marker = tmp_path / "pwned"
    path = evil_pickle(tmp_path / "evil.pth", marker)
    with refused(f"{path}: not a loadable tensor checkpoint"):
        checkpoints.load_state_dict(path)
    assert not marker.exists()


def test_os_system_pickle_is_refused_by_import(tmp_path):
    marker = tmp_path / "pwned"
    path = evil_pickle(tmp_path / "evil.pth", marker)
    with refused(str(path)):
        install.import_weights(MODEL, path, allow_unpinned=True)
    assert not marker.exists() and not checkpoints.weights_path(get_spec(MODEL)).exists()


@pytest.mark.parametrize("name", ["pytorch_model.bin", "weights.pth"])
def test_os_system_pickle_is_refused_by_the_transformers_loader(tmp_path, tiny_registry, name):
    marker = tmp_path / "pwned"
    path = evil_pickle(tmp_path / name, marker)
    with pytest.raises(CellSearchError) as caught:
        build_model(get_spec("vitmae_base"), checkpoint=path)
    assert str(path) in str(caught.value) and "not a loadable tensor checkpoint" in str(caught.value)
    assert "Traceback" not in str(caught.value) and not marker.exists()


@pytest.mark.parametrize("content", [
    safetensors_bytes(b"{" + b" " * 50, length=1 << 29),  # header longer than the file
    safetensors_bytes(b'{"w": not json}'),
    safetensors_bytes(b'{"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}', b"\0" * 8),
    safetensors_bytes(b'{"w": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4),
])
def test_safetensors_with_a_bad_header(tmp_path, tiny_registry, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with refused(f"{path}: not a loadable tensor checkpoint"):
        checkpoints.load_state_dict(path)
    with refused(str(path)):
        build_model(get_spec("vitmae_base"), checkpoint=path)


@pytest.mark.parametrize("payload", [[1, 2, 3], {"epoch": 3, "name": "x"}, {}, "text"])
def test_checkpoints_without_tensors(tmp_path, payload):
    path = tmp_path / "odd.pth"
    torch.save(payload, path)
    with refused(f"{path}: holds no state dict of tensors"):
        checkpoints.load_state_dict(path)


def test_a_truncated_torch_archive_is_refused(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"w": torch.zeros(4096)}, path)
    os.truncate(path, path.stat().st_size // 2)
    with refused(f"{path}: not a loadable tensor checkpoint"):
        checkpoints.load_state_dict(path)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(os.urandom(10_000))
    with refused(f"{path}: not a loadable tensor checkpoint"):
        checkpoints.load_state_dict(path)


def test_a_non_tensor_value_is_refused_as_a_different_model(tmp_path):
    path = tmp_path / "mixed.pth"
    torch.save({"features.0.0.weight": torch.zeros(3), "meta": 7}, path)
    with refused(f"{path}.*different model"):
        build_model(get_spec(MODEL), checkpoint=path)


@pytest.mark.skipif(not (SHARED_MODELS / "efficientnet_lite0_imagenet.pth").is_file(), reason="no shared models")
def test_wrong_architecture_is_refused(tmp_path):
    path = SHARED_MODELS / "efficientnet_lite0_imagenet.pth"
    with refused("different model"):
        build_model(get_spec(MODEL), checkpoint=path)
    with refused("does not match the pinned checkpoint", ChecksumMismatchError):
        install.import_weights(MODEL, path)


def test_a_folder_without_weights_is_refused_by_import(tmp_path):
    (tmp_path / "empty").mkdir()
    with refused("expected one weights file"):
        install.import_weights(MODEL, tmp_path / "empty")


def test_a_damaged_hub_cache_blob_says_delete_and_download(tmp_path, hub_cache, tiny_registry):
    good = tmp_path / "good.safetensors"
    good.write_bytes(safetensors_bytes(b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[:-1] + b"\1")
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    put_in_hub_cache(hub_cache, "facebook/vit-mae-base", "model.safetensors", bad, blob_name=digest)
    with refused("damaged.*delete .*models download vitmae_base", ChecksumMismatchError):
        checkpoints.require_weights(get_spec("vitmae_base"), fetch=False)


def test_copying_a_good_file_back_repairs(stored, tmp_path):
    backup = tmp_path / "backup.pth"
    shutil.copyfile(stored, backup)
    good = check()
    stored.write_bytes(b"x" * 10)
    with refused("damaged", ChecksumMismatchError):
        check()
    shutil.copyfile(backup, stored)
    assert check() == good


@pytest.mark.parametrize("kind", ["folder", "dev_zero", "unreadable"])
def test_models_list_and_verify_never_raise(stored, kind):
    if kind == "unreadable":
        stored.chmod(0)
        if os.access(stored, os.R_OK):
            stored.chmod(0o644)
            pytest.skip("chmod has no effect here (root)")
    else:
        stored.unlink()
        stored.mkdir() if kind == "folder" else stored.symlink_to("/dev/zero")
    spec = get_spec(MODEL)
    try:
        states = checkpoints.status(spec).state, checkpoints.status(spec, verify=True).state
    finally:
        if kind == "unreadable":
            stored.chmod(0o644)
    assert states in {("missing", "missing"), ("present", "CHECKSUM MISMATCH")}
