import numpy as np
import pytest
from PIL import Image

from cellsearch_gui.core.errors import BadImageError
from cellsearch_gui.core.io.images import read_rgb, to_uint8


def test_grayscale_16bit_rgba_and_float(tmp_path):
    gray = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    deep = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d16.png")
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 7)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    import tifffile

    tifffile.imwrite(tmp_path / "f.tif", np.linspace(-1, 1, 64 * 64, dtype=np.float32).reshape(64, 64))
    for name in ("g.png", "d16.png", "a.png", "f.tif"):
        out = read_rgb(tmp_path / name)
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8, name
        assert out.max() > 200 and out.min() < 50, name  # the full range is used, not clipped to black


def test_16bit_keeps_contrast_of_12bit_data():
    data = np.linspace(100, 4000, 1000).astype(np.uint16)
    out = to_uint8(data)
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("name,content,problem", [
    ("empty.png", b"", "empty file"),
    ("notes.jpg", b"this is text, not a picture", "not an image"),
    ("tiny.png", None, "only 1x1"),
])
def test_bad_files_are_named(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is None:
        Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(BadImageError, match=problem) as info:
        read_rgb(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg(tmp_path):
    good = tmp_path / "cell.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8)).save(good)
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(good.read_bytes()[:1500])
    with pytest.raises(BadImageError, match="corrupt or truncated"):
        read_rgb(bad)


def test_non_ascii_path(tmp_path):
    folder = tmp_path / "Zellen_µm_細胞"
    folder.mkdir()
    Image.fromarray(np.full((20, 20, 3), 99, np.uint8)).save(folder / "zelle_ä.png")
    assert read_rgb(folder / "zelle_ä.png").shape == (20, 20, 3)
