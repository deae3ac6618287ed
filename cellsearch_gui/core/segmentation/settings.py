"""Segmentation settings, the field normalisation, and the segmenter factory."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from cellsearch_gui.core import validation
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.options import Segmenter as SegmenterName
from cellsearch_gui.core.segmentation.base import Segmenter
from cellsearch_gui.core.segmentation.choice import SegmenterChoice, resolve_segmenter
from cellsearch_gui.core.segmentation.classical import ClassicalSegmenter
from cellsearch_gui.core.segmentation.sam import SamSegmenter, tile_batch_for


@dataclass
class Normalisation:
    clahe: bool = False
    clahe_clip: float = 2.0
    clahe_grid: int = 8
    target_pixel_size_um: float | None = None
    colour: str = "none"  # none | reinhard | macenko | grayscale (CLAHE via ``clahe``)

    def __post_init__(self) -> None:
        validation.PIXEL_SIZE.check(self.target_pixel_size_um)
        validation.COLOUR_MODE.check(self.colour)
        validation.Range("CLAHE clip limit", float, 0.0, 1000.0, low_open=True).check(self.clahe_clip)
        validation.Range("CLAHE grid", int, 1, 1024).check(self.clahe_grid)

    def scale_for(self, pixel_size_um: float | None) -> float:
        """Rescale factor = source um/px / target um/px (1 when either is unknown)."""
        if not self.target_pixel_size_um or not pixel_size_um:
            return 1.0
        return pixel_size_um / self.target_pixel_size_um

    def as_dict(self) -> dict:
        return asdict(self)


SEGMENTERS = tuple(SegmenterName)


DEFAULT_DIAMETER_PX = 60.0  # only when no size is given and none can be measured (a field with no object)


@dataclass
class SegmentSettings:
    segmenter: str = "auto"  # SAM on a CUDA GPU, else classical (resolved_settings)
    objects: str = "all"  # all | nucleated (cells with a stained nucleus, e.g. white blood cells)
    pixel_size_um: float | None = None  # overrides the file's metadata
    cell_diameter_um: float | None = None
    cell_diameter_px: float | None = None  # at the working scale; used when no pixel size is known
    # neither diameter given: measured on each field (segmentation.size.estimate_diameter)
    min_area_fraction: float = 0.25  # of the typical cell area
    max_area_fraction: float = 4.0
    drop_border_cells: bool = False  # default: border cells are kept, flagged ``touches_border``
    tile_size: int = 1024
    overlap: int | None = None  # default: 1.5 cell diameters
    crop_size: int = 224
    mask_background: bool = False
    normalisation: Normalisation = field(default_factory=Normalisation)
    device: str = "auto"  # SAM's device (the classical segmenter runs on the CPU)
    checkpoint: str | None = None  # a SAM checkpoint file instead of the imported weights

    def __post_init__(self) -> None:
        """Every field checked against its domain (core/validation.py): a zero tile size would never end."""
        validation.SEGMENTER.check(self.segmenter)
        validation.CELL_OBJECTS.check(self.objects)
        validation.PIXEL_SIZE.check(self.pixel_size_um)
        validation.DIAMETER_UM.check(self.cell_diameter_um)
        validation.DIAMETER_PX.check(self.cell_diameter_px)
        validation.AREA_FRACTION.check(self.min_area_fraction)
        validation.AREA_FRACTION.check(self.max_area_fraction)
        if self.max_area_fraction <= self.min_area_fraction:
            raise validation.InvalidSetting(f"max area fraction ({self.max_area_fraction}) must exceed the "
                                            f"min area fraction ({self.min_area_fraction})")
        validation.TILE_SIZE.check(self.tile_size)
        validation.OVERLAP.check(self.overlap)
        validation.CROP_SIZE.check(self.crop_size)
        validation.check_device(self.device)

    def diameter_px(self, pixel_size_um: float | None) -> tuple[float | None, str]:
        """The diameter the user gave, in working pixels, and how it was given; (None, ...) when none was
        given (or given in um with no pixel size known): the caller measures it on the field."""
        working_px = self.normalisation.target_pixel_size_um or pixel_size_um
        if self.cell_diameter_um and working_px:
            return self.cell_diameter_um / working_px, f"{self.cell_diameter_um} um (given)"
        if self.cell_diameter_px:
            return self.cell_diameter_px, f"{self.cell_diameter_px} px (given)"
        if self.cell_diameter_um:
            return None, f"{self.cell_diameter_um} um given but the pixel size is unknown"
        return None, "no cell size given"


def set_cell_diameter(segmenter: Segmenter, diameter_px: float) -> None:
    """Re-size a segmenter for the next field (its SAM model, if any, stays loaded)."""
    classical = getattr(segmenter, "proposals", segmenter)
    if isinstance(classical, ClassicalSegmenter):
        classical.cell_diameter_px = diameter_px


def resolved_settings(settings: SegmentSettings) -> tuple[SegmentSettings, SegmenterChoice]:
    """``settings`` with the segmenter and device that actually run (``auto`` resolved), and the choice."""
    choice = resolve_segmenter(settings.segmenter, settings.device, settings.checkpoint)
    device = choice.device if choice.segmenter != SegmenterName.CLASSICAL else settings.device
    return replace(settings, segmenter=choice.segmenter, device=device), choice


def make_segmenter(settings: SegmentSettings, diameter_px: float) -> Segmenter:
    """The segmenter the settings name: classical, or SAM prompted by classical proposals (``auto``
    resolved here when the caller has not)."""
    if settings.segmenter == SegmenterName.AUTO or settings.device == "auto":
        settings = resolved_settings(settings)[0]
    proposals = ClassicalSegmenter(objects=settings.objects, cell_diameter_px=diameter_px)
    if settings.segmenter == "classical":
        return proposals
    if settings.segmenter in SEGMENTERS:
        return SamSegmenter(settings.segmenter, proposals=proposals, device=settings.device,
                            checkpoint=settings.checkpoint,
                            tile_batch=tile_batch_for(settings.segmenter, settings.device))
    raise CellSearchError(f"unknown segmenter '{settings.segmenter}'; choose one of {', '.join(SEGMENTERS)}")
