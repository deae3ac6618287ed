"""Microscope fields of any size: lazy region reads, pixel size from metadata, a decompression-bomb guard.

TIFF (incl. BigTIFF and OME-TIFF) is opened with tifffile and memory-mapped when the pixel data is
stored uncompressed and contiguous; other formats are decoded once. Regions come back as uint8 RGB,
16-bit and float data mapped with one intensity range for the whole image (so tiles match).
"""

from __future__ import annotations

import mmap
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellsearch_gui.core.errors import BadImageError
from cellsearch_gui.core.io.files import display_path, regular_file_problem
from cellsearch_gui.core.io.images import check_budget, intensity_range, read_rgb, stretch, to_rgb

MAX_FIELD_PIXELS = int(float(os.environ.get("CELLSEARCH_MAX_FIELD_PIXELS", 4e9)))
_UNIT_TO_UM = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "\\u00B5m": 1.0,
               "mm": 1e3, "cm": 1e4, "m": 1e6}


@dataclass
class FieldInfo:
    path: Path
    height: int
    width: int
    channels: int
    dtype: str
    pixel_size_um: float | None
    pixel_size_source: str
    lazy: bool


def _ome_pixel_size(ome_xml: str) -> float | None:
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("Pixels") and "PhysicalSizeX" in element.attrib:
            unit = element.attrib.get("PhysicalSizeXUnit", "µm")
            return float(element.attrib["PhysicalSizeX"]) * _UNIT_TO_UM.get(unit, 1.0)
    return None


def _tiff_pixel_size(tif) -> tuple[float | None, str]:
    if tif.ome_metadata:
        size = _ome_pixel_size(tif.ome_metadata)
        if size:
            return size, "OME-XML PhysicalSizeX"
    page = tif.pages.first
    tags = page.tags
    if "XResolution" not in tags:
        return None, "none in file"
    num, den = tags["XResolution"].value
    if not num:
        return None, "none in file"
    px_per_unit = num / den
    unit_code = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    if tif.imagej_metadata and tif.imagej_metadata.get("unit"):
        factor = _UNIT_TO_UM.get(str(tif.imagej_metadata["unit"]).strip().lower())
        if factor:
            return factor / px_per_unit, f"ImageJ resolution ({tif.imagej_metadata['unit']})"
    if unit_code == 3:  # centimetre
        return 1e4 / px_per_unit, "TIFF XResolution (per cm)"
    return None, "TIFF resolution in dpi (a display setting, not a pixel size)"


class Field:
    """An opened image; ``read(y0, y1, x0, x1)`` returns that region as uint8 RGB."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tif = None
        self._array = None
        self._range = None
        problem = regular_file_problem(self.path)
        if problem:
            raise BadImageError(display_path(self.path), problem)
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise BadImageError(display_path(self.path), f"cannot open ({exc.strerror})") from None
        if size == 0:
            raise BadImageError(display_path(self.path), "empty file (0 bytes)")
        if self.path.suffix.lower() in (".tif", ".tiff", ".btf", ".tf8"):
            self._open_tiff()
        else:
            self._array = read_rgb(self.path)
            self.info = FieldInfo(self.path, *self._array.shape[:2], 3, "uint8", None, "none in file", False)

    def _open_tiff(self) -> None:
        import tifffile

        try:
            tif = tifffile.TiffFile(self.path)
            page = tif.pages.first
            shape, dtype = page.shape, page.dtype
        except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds for broken files
            raise BadImageError(display_path(self.path), f"not a readable TIFF ({exc.__class__.__name__}: {exc})") from None
        height, width = (shape[0], shape[1]) if page.axes[:2] == "YX" else (page.imagelength, page.imagewidth)
        if height * width > MAX_FIELD_PIXELS:
            tif.close()
            raise BadImageError(display_path(self.path), f"header claims {width} x {height} pixels, more than the "
                                           f"{MAX_FIELD_PIXELS:,}-pixel limit (CELLSEARCH_MAX_FIELD_PIXELS)")
        if height < 2 or width < 2:
            tif.close()
            raise BadImageError(display_path(self.path), f"image is only {width}x{height} pixels")
        pixel_size, source = _tiff_pixel_size(tif)
        channels = 1 if len(shape) == 2 else shape[2]
        self._tif = tif
        try:
            self._array = tif.asarray(out="memmap") if page.is_memmappable else None
        except Exception:  # noqa: BLE001
            self._array = None
        if self._array is None:
            self._array = self._segmented_or_whole(tif, page)
        if isinstance(self._array, np.ndarray) and self._array.ndim == 3 and self._array.shape[0] in (3, 4) and self._array.shape[2] not in (3, 4):
            self._array = np.moveaxis(self._array, 0, -1)  # planar RGB
        self.info = FieldInfo(self.path, height, width, channels, str(dtype), pixel_size, source,
                              not isinstance(self._array, np.ndarray) or isinstance(self._array, np.memmap))

    def _segmented_or_whole(self, tif, page):
        """Compressed pages are read by strip or tile; whole only when that is impossible and fits the budget."""
        from cellsearch_gui.core.io.tiff_regions import SegmentedPage

        try:
            return SegmentedPage(page, self.path)
        except BadImageError:
            tif.close()
            raise
        except Exception:  # noqa: BLE001 - odd layouts fall back to one whole read below
            pass
        try:
            check_budget(self.path, "the whole image", int(np.prod(page.shape)) * page.dtype.itemsize)
            return page.asarray()
        except BadImageError:
            tif.close()
            raise
        except Exception as exc:  # noqa: BLE001
            tif.close()
            raise BadImageError(display_path(self.path), f"corrupt TIFF data ({exc.__class__.__name__}: {exc})") from None

    @property
    def shape(self) -> tuple[int, int]:
        return self.info.height, self.info.width

    def _strided(self, step: int) -> np.ndarray:
        """Every ``step``-th row and column, read in bands with mapped pages released after each."""
        band = step * 256
        parts = []
        for y0 in range(0, self.shape[0], band):
            parts.append(self._region(slice(y0, y0 + band, step), slice(None, None, step)))
            self.release_pages()
        return np.concatenate(parts)

    def _intensity_range(self) -> tuple[float, float] | None:
        """One range for the whole field (from a ~4-megapixel sample), so all its tiles match."""
        if self._array.dtype == np.uint8:
            return None
        if self._range is None:
            step = max(1, int(np.sqrt(self.shape[0] * self.shape[1] / 4e6)))
            try:
                self._range = intensity_range(self._strided(step))
            except ValueError:
                self._range = (0.0, 1.0)
        return self._range

    def _to_rgb8(self, region: np.ndarray) -> np.ndarray:
        rng = self._intensity_range()
        try:
            return to_rgb(stretch(region, *rng) if rng is not None else region)
        except ValueError as exc:
            raise BadImageError(display_path(self.path), str(exc)) from None

    def _region(self, rows: slice, cols: slice) -> np.ndarray:
        try:
            return np.array(self._array[rows, cols])
        except BadImageError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged strip or tile shows up when it is read
            raise BadImageError(display_path(self.path), f"corrupt TIFF data ({exc.__class__.__name__}: {exc})"
                                ) from None

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self._to_rgb8(self._region(slice(max(0, y0), y1), slice(max(0, x0), x1)))

    def overview(self, max_side: int = 2048) -> np.ndarray:
        """A strided (nearest-neighbour) view of the whole field, read without loading it all."""
        return self._to_rgb8(self._strided(max(1, int(np.ceil(max(self.shape) / max_side)))))

    def release_pages(self) -> None:
        """Drop the memory-mapped pages read so far from this process's resident memory (they are
        clean file pages; the kernel re-reads them if needed). Keeps a tile-by-tile pass flat in RAM."""
        mm = getattr(self._array, "_mmap", None)
        if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
        self._array = None

    def __enter__(self) -> "Field":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_pixel_size(text: str | float | None) -> float | None:
    """'0.322', '0.322um', '322 nm' -> micrometres per pixel."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([a-zA-Zµ]*)\s*", text)
    if not match:
        raise ValueError(f"cannot read a pixel size from '{text}'")
    return float(match.group(1)) * _UNIT_TO_UM.get(match.group(2).lower() or "um", 1.0)
