"""Reading cell images of any common depth and layout into uint8 RGB arrays, with clear errors."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from cellsearch_gui.core.errors import BadImageError
from cellsearch_gui.core.io.files import display_path, regular_file_problem

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
MAX_PIXELS = 200_000_000  # decompression-bomb guard for a single crop or field
READ_BUDGET = int(float(os.environ.get("CELLSEARCH_READ_BUDGET_MB", 1024)) * 2**20)  # decoded bytes per read


def check_budget(path: Path, what: str, n_bytes: int) -> None:
    """Refuse, naming the file, a read whose decoded data would exceed the memory budget."""
    if n_bytes > READ_BUDGET:
        raise BadImageError(display_path(path), f"{what} would take {n_bytes / 2**20:,.0f} MiB of memory once decoded, more "
                                  f"than the {READ_BUDGET / 2**20:,.0f} MiB budget for one read "
                                  "(CELLSEARCH_READ_BUDGET_MB)")


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def intensity_range(data: np.ndarray) -> tuple[float, float]:
    """The 0.5 and 99.5 percentiles of the finite values (min and max when those coincide)."""
    values = np.asarray(data, dtype=np.float32)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError("no finite pixel values")
    low, high = np.percentile(finite, [0.5, 99.5])
    if high <= low:
        low, high = finite.min(), finite.max()
    return float(low), float(high)


def stretch(data: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear map of [low, high] to 0..255 (NaN to low, infinities clipped)."""
    values = np.nan_to_num(data.astype(np.float32), nan=low, posinf=high, neginf=low)
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip((values - low) * scale, 0, 255).astype(np.uint8)


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Map any depth to 0..255; 16-bit and float data are stretched between the 0.5 and 99.5 percentiles."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    return stretch(array, *intensity_range(array))


def to_rgb(array: np.ndarray) -> np.ndarray:
    """Grayscale, gray+alpha, RGB or RGBA (any depth) to HxWx3 uint8."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"unsupported array shape {array.shape}")
    channels = array.shape[2]
    if channels in (2, 4):  # drop alpha
        array = array[:, :, : channels - 1]
        channels -= 1
    if channels == 1:
        array = np.repeat(array, 3, axis=2)
    elif channels != 3:
        raise ValueError(f"{channels} channels; expected 1 (gray), 3 (RGB) or 4 (RGBA)")
    return np.ascontiguousarray(to_uint8(array))


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8, or raise BadImageError naming the file and the problem."""
    path = Path(path)
    problem = regular_file_problem(path)
    if problem:
        raise BadImageError(display_path(path), problem)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadImageError(display_path(path), f"cannot open ({exc.strerror})") from None
    if size == 0:
        raise BadImageError(display_path(path), "empty file (0 bytes)")
    if path.suffix.lower() in (".tif", ".tiff"):
        array = _read_tiff(path)
    else:
        array = _read_with_pil(path)
    if array.ndim < 2 or min(array.shape[:2]) < 2:
        size_text = "x".join(map(str, array.shape[1::-1])) if array.ndim >= 2 else "0x0"
        raise BadImageError(display_path(path), f"image is only {size_text} pixels")
    try:
        return to_rgb(array)
    except ValueError as exc:
        raise BadImageError(display_path(path), str(exc)) from None


def _read_tiff(path: Path) -> np.ndarray:
    """First page of a TIFF with tifffile: any depth (16-bit, float) and channel count; pages beyond the
    first (a stack) are not used."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if int(np.prod(page.shape[:2])) > MAX_PIXELS:
                raise BadImageError(display_path(path), f"{page.shape[1]}x{page.shape[0]} pixels exceeds the "
                                          f"{MAX_PIXELS:,}-pixel limit for one image")
            check_budget(path, "the image", int(np.prod(page.shape)) * page.dtype.itemsize)
            array = page.asarray()
    except BadImageError:
        raise
    except tifffile.TiffFileError:
        raise BadImageError(display_path(path), "not an image file (not a readable TIFF)") from None
    except Exception as exc:  # noqa: BLE001 - codecs raise their own kinds (zlib.error...) for damaged data
        raise BadImageError(display_path(path), f"corrupt or truncated image ({exc.__class__.__name__}: {exc})"
                            ) from None
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar RGB
    return array


def _read_with_pil(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise BadImageError(display_path(path), f"{image.width}x{image.height} pixels exceeds the "
                                              f"{MAX_PIXELS:,}-pixel limit for one image")
                check_budget(path, "the image", image.width * image.height * _decoded_bytes_per_pixel(image))
                image.load()  # raises on truncated or corrupt data
                array = _pil_to_array(image)
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(display_path(path), "not an image file (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(display_path(path), f"refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(display_path(path), f"corrupt or truncated image ({exc})") from None
    return array


def _decoded_bytes_per_pixel(image) -> int:
    depth = 1 if image.mode in ("1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV") else 4
    return max(3, len(image.getbands())) * depth


def _pil_to_array(image) -> np.ndarray:
    mode = image.mode
    if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
    elif mode.startswith("I;16"):
        return np.array(image, dtype=np.uint16)
    return np.asarray(image)


def rescale(image: np.ndarray, scale: float, nearest: bool = False) -> np.ndarray:
    import cv2

    if abs(scale - 1.0) < 1e-6:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return cv2.resize(image, size, interpolation=interp)


def _hidden_part(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def images_under(folder: Path, problems: list[str]) -> list[Path]:
    """Image files anywhere under ``folder`` (hidden and '_' names left out). Linked sub-folders are not
    entered (no loops, no leaving the folder); special files and broken links are reported and skipped;
    a file reached twice through links is used once."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder, onerror=lambda exc: problems.append(
            f"{display_path(exc.filename or folder)}: cannot read ({exc.strerror})")):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            path = here / name
            if not is_image_name(path) or _hidden_part(path, folder):
                continue
            problem = regular_file_problem(path)
            if problem:
                problems.append(f"{display_path(path)}: {problem}, skipped")
                continue
            found.setdefault(os.path.realpath(path), path)
    return sorted(found.values())


def collect_images(inputs: list[str | Path]) -> tuple[list[Path], list[str]]:
    images, problems = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            found = images_under(item, problems)
            if not found:
                problems.append(f"{display_path(item)}: folder holds no images")
            images += found
        elif item.is_file():
            images.append(item)
        elif os.path.lexists(item):
            problems.append(f"{display_path(item)}: {regular_file_problem(item) or 'not a file'}, skipped")
        else:
            problems.append(f"{display_path(item)}: no such file or folder")
    return images, problems
