"""Device-invariant cell crops: find the cell, centre on it, bring it to a common scale, mask, normalise colour.

One framing function (``frame_cell``) serves both crops cut from segmented fields and ready-made crop
folders, so the two paths give the same pixels for the same cell.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import numpy as np

from cellsearch_gui.core import validation
from cellsearch_gui.core.crops.colour import (
    lab_statistics,
    normalise_colour,
)
from cellsearch_gui.core.options import ColourMode, Preset, ScaleMode
from cellsearch_gui.core.segmentation.classical import (
    ClassicalSegmenter,
    nucleus_map,
)
from cellsearch_gui.core.segmentation.masks import CellMask

SCALE_MODES = tuple(ScaleMode)
BACKGROUND = 255  # constant fill outside the mask: the same for every device


@dataclass(frozen=True)
class CropPrep:
    """How a crop is prepared before embedding; recorded in every result's provenance."""

    centre: bool = False
    scale: str = "none"  # none | physical (pixel sizes) | cell_size (the cell's own diameter)
    pixel_size_um: float | None = None  # source pixel size for a crop folder
    target_pixel_size_um: float = 0.3
    cell_fraction: float = 0.55  # cell_size mode: cell diameter as a fraction of the crop side
    mask: bool = False
    colour: str = "none"
    objects: str = "nucleated"  # how to find the cell in a crop: nucleated | all
    crop_size: int = 224
    device_colour: tuple[float, ...] | None = None  # LAB mean+std of this device (device_reinhard)
    detail: float = 0.0  # >0: Gaussian low-pass (sigma in output px) to a common, coarser level of detail

    def __post_init__(self) -> None:
        """Every field checked against its domain (core/validation.py); InvalidSetting is a ValueError."""
        validation.SCALE_MODE.check(self.scale)
        validation.COLOUR_MODE.check(self.colour)
        validation.CELL_OBJECTS.check(self.objects)
        validation.PIXEL_SIZE.check(self.pixel_size_um)
        validation.PIXEL_SIZE.check(self.target_pixel_size_um)
        if self.target_pixel_size_um is None:
            raise validation.InvalidSetting("target pixel size (um/px) is needed")
        validation.CELL_FRACTION.check(self.cell_fraction)
        validation.CROP_SIZE.check(self.crop_size)
        validation.DETAIL.check(self.detail)

    @property
    def active(self) -> bool:
        return self.centre or self.scale != "none" or self.mask or self.colour != "none"

    @property
    def needs_cell(self) -> bool:
        return self.centre or self.scale == "cell_size" or self.mask

    def tag(self) -> str:
        if not self.active:
            return "raw"
        return ";".join(f"{k}={v}" for k, v in sorted(asdict(self).items()))

    def as_dict(self) -> dict:
        return asdict(self)


def find_cell(rgb: np.ndarray, objects: str = "nucleated") -> tuple[CellMask | None, int]:
    """The cell a crop is about: among the objects found, the one nearest the centre (large ones only)."""

    guess = 0.5 * min(rgb.shape[:2])
    finder = ClassicalSegmenter(objects=objects, cell_diameter_px=guess)
    if objects == "nucleated":
        nuclei = nucleus_map(rgb, finder.nucleus_threshold)  # independent of the diameter: made once
        masks = finder.cells_from_nuclei(nuclei)
        if masks:  # refine the size-dependent settings with the measured cell
            finder.cell_diameter_px = 2 * np.sqrt(max(m.area for m in masks) / np.pi)
            masks = finder.cells_from_nuclei(nuclei) or masks
    else:
        masks = finder.segment(rgb)
    if not masks:
        return None, 0
    biggest = max(m.area for m in masks)
    centre = np.array(rgb.shape[:2]) / 2
    candidates = [m for m in masks if m.area >= 0.2 * biggest]
    best = min(candidates, key=lambda m: np.hypot(*(np.array(m.centroid) - centre)))
    return best, len(masks)


def _warp(image: np.ndarray, scale: float, cy: float, cx: float, size: int, border) -> np.ndarray:
    """Resample so (cy, cx) lands on the output centre at ``scale`` output pixels per input pixel."""
    import cv2

    if scale < 1:  # area-average first so shrinking does not alias
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        cy, cx, factor = scale * (cy + 0.5) - 0.5, scale * (cx + 0.5) - 0.5, 1.0
    else:
        factor = scale
    centre = (size - 1) / 2
    matrix = np.array([[factor, 0, centre - factor * cx], [0, factor, centre - factor * cy]])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def frame_cell(image: np.ndarray, mask: CellMask | None, scale: float, crop_size: int, mask_background: bool,
               colour: str = "none", centre: tuple[float, float] | None = None, colour_stats=None,
               return_mask: bool = False, detail: float = 0.0):
    """Crop ``crop_size`` pixels (after scaling by ``scale``) centred on the mask, then normalise and mask."""
    import cv2

    if centre is None:
        centre = mask.centroid if mask is not None else ((image.shape[0] - 1) / 2, (image.shape[1] - 1) / 2)
    cy, cx = centre
    crop = _warp(image, scale, cy, cx, crop_size, cv2.BORDER_REPLICATE)
    if detail > 0:  # devices differ in sharpness; blur all to one level of detail
        crop = cv2.GaussianBlur(crop, (0, 0), detail)
    inside = None
    if mask is not None and (mask_background or colour == "reinhard" or return_mask):
        full = np.zeros(image.shape[:2], np.float32)
        h = min(mask.mask.shape[0], image.shape[0] - mask.y0)
        w = min(mask.mask.shape[1], image.shape[1] - mask.x0)
        full[mask.y0 : mask.y0 + h, mask.x0 : mask.x0 + w] = mask.mask[:h, :w]
        inside = _warp(full, scale, cy, cx, crop_size, cv2.BORDER_CONSTANT) >= 0.5
    crop = normalise_colour(crop, colour, inside, colour_stats)
    if mask_background and inside is not None:
        crop = np.where(inside[:, :, None], crop, np.uint8(BACKGROUND))
    crop = np.ascontiguousarray(crop)
    return (crop, inside) if return_mask else crop


_CELL = {"centre": True, "scale": ScaleMode.CELL_SIZE, "mask": True}
PRESETS = {
    Preset.RAW: {},
    Preset.CENTRED: {"centre": True},
    Preset.CENTRED_SCALED: {"centre": True, "scale": ScaleMode.CELL_SIZE},
    Preset.CELL: _CELL,
    Preset.CELL_DEVICE_COLOUR: {**_CELL, "colour": ColourMode.DEVICE_REINHARD},
    Preset.CELL_GRAYSCALE: {**_CELL, "colour": ColourMode.GRAYSCALE},
    Preset.CELL_CLAHE: {**_CELL, "colour": ColourMode.CLAHE},
}


def preset(name: str, physical: bool = False, **overrides) -> CropPrep:
    """A named preset; ``physical`` swaps its cell-size scaling for pixel-size scaling."""
    validation.PRESET.check(name)
    settings = {**PRESETS[name], **overrides}
    if physical and settings.get("scale") == "cell_size":
        settings["scale"] = "physical"
    return CropPrep(**settings)


@dataclass
class PrepRecord:
    cell_found: bool
    objects_found: int
    scale: float
    scale_source: str
    note: str = ""


def prepare_crop(rgb: np.ndarray, prep: CropPrep, pixel_size_um: float | None = None,
                 return_mask: bool = False):
    """A ready-made crop -> the prepared crop, with a record of what was done."""
    if not prep.active:
        return rgb, PrepRecord(False, 0, 1.0, "not rescaled")
    # Trade-off: a crop file carries no mask, so the cell is found here. Crops cut from segmented fields were
    # framed with their own segmentation mask (records.cut_crop -> frame_cell, never find_cell); when a preset
    # needs the cell again at embedding time, it is found in the written crop like any crop file, because the
    # embedding cache is keyed by file content and prep tag only. Finding is deterministic and its record is
    # cached with the features; handing the segmentation mask over would change segmented cells' features.
    mask, n_found = find_cell(rgb, prep.objects) if prep.needs_cell else (None, 0)
    notes = []
    if prep.needs_cell and mask is None:
        notes.append("no cell found: whole crop used, centred on the crop")
    elif n_found > 1:
        notes.append(f"{n_found} objects found: the one nearest the centre was used")
    if mask is not None:
        x0, y0, x1, y1 = mask.bbox
        if x0 <= 0 or y0 <= 0 or x1 >= rgb.shape[1] or y1 >= rgb.shape[0]:
            notes.append("cell touches the crop border: part of it may be missing")
    px = prep.pixel_size_um or pixel_size_um
    default_scale = prep.crop_size / min(rgb.shape[:2])
    if prep.scale == "physical" and px:
        scale, source = px / prep.target_pixel_size_um, f"pixel size {px} -> {prep.target_pixel_size_um} um/px"
    elif prep.scale in ("physical", "cell_size") and mask is not None:
        diameter = 2 * np.sqrt(mask.area / np.pi)
        scale = prep.cell_fraction * prep.crop_size / diameter
        source = f"estimated from the cell's own size ({diameter:.0f} px across)"
        if prep.scale == "physical":
            notes.append("pixel size unknown: scale estimated from the cell's size")
    else:
        scale, source = default_scale, "whole crop fitted to the output size"
        if prep.scale != "none":
            notes.append("scale could not be set (no pixel size, no cell): whole crop fitted")
    centre = mask.centroid if (prep.centre and mask is not None) else ((rgb.shape[0] - 1) / 2,
                                                                        (rgb.shape[1] - 1) / 2)
    colour = prep.colour
    if colour == "device_reinhard" and prep.device_colour is None:
        colour = "none"  # statistics pass: the device transform is being measured
    out = frame_cell(rgb, mask, scale, prep.crop_size, prep.mask and mask is not None, colour, centre,
                     prep.device_colour, return_mask, prep.detail)
    record = PrepRecord(mask is not None, n_found, float(scale), source, "; ".join(notes))
    if return_mask:
        return out[0], record, out[1]
    return out, record


def with_device_colour(prep: CropPrep, paths, read, sample: int = 64) -> CropPrep:
    """For device_reinhard: measure the device's LAB statistics on up to ``sample`` of its crops."""


    if prep.colour != "device_reinhard" or prep.device_colour is not None or not paths:
        return prep
    step = max(1, len(paths) // sample)
    crops, masks = [], []
    for path in list(paths)[::step][:sample]:
        try:
            image = read(path)
        except Exception:  # noqa: BLE001 - unreadable crops are reported by the embedding pass
            continue
        crop, _, inside = prepare_crop(image, prep, return_mask=True)
        crops.append(crop)
        masks.append(inside)
    if not crops:
        return prep
    return dataclasses.replace(prep, device_colour=lab_statistics(crops, masks))
