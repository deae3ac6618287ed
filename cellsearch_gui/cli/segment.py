"""`cellsearch segment`: microscope images -> cell crops and a cells.csv."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellsearch_gui.cli.common import (
    add_offline_option,
    arg,
    check_device_available,
    device,
    output_folder,
    pixel_size,
    run,
)
from cellsearch_gui.cli.engine import add_engine_options, check_engine_options, ray_engine, segment_work_dir
from cellsearch_gui.core import validation
from cellsearch_gui.core.app.segment import segment_images
from cellsearch_gui.core.app.sharded_jobs import DEFAULT_SHARD_IMAGES, sharded_segment_job
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.options import CellObjects, Segmenter, values
from cellsearch_gui.core.segmentation.fields import field_note, plural
from cellsearch_gui.core.segmentation.settings import Normalisation, SegmentSettings


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after each option's help, except switches (off unless given), options whose help
    says its own default, and required ones."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False) or action.required or "default:" in text:
            return text
        return super()._get_help_string(action)


def _segmenter_help() -> str:
    others = [s.value for s in Segmenter if s not in (Segmenter.CLASSICAL, Segmenter.AUTO)]
    return (f"{Segmenter.AUTO.value} (prompted SAM on a CUDA GPU, else classical), {Segmenter.CLASSICAL.value} "
            f"(CPU, fast), {', '.join(others[:-1])} or {others[-1]}")


def add_parser(sub) -> None:
    defaults = SegmentSettings()
    sg = sub.add_parser("segment", help="segment microscope images into cell crops and a cells.csv",
                        formatter_class=DefaultsShown)
    sg.set_defaults(handler=cmd_segment)
    sg.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    sg.add_argument("--out", required=True, type=output_folder, help="output folder (crops/, cells.csv)")
    sg.add_argument("--segmenter", type=arg(validation.SEGMENTER), default=defaults.segmenter,
                    help=_segmenter_help())
    sg.add_argument("--objects", default=defaults.objects, choices=values(CellObjects),
                    help="all cells, or only cells with a stained nucleus (white cells in a blood smear)")
    sg.add_argument("--pixel-size", type=pixel_size, default=defaults.pixel_size_um,
                    help="um per pixel of the images (overrides metadata), e.g. 0.322 or 322nm (default: from the "
                         "file's metadata)")
    sg.add_argument("--target-pixel-size", type=pixel_size, default=defaults.normalisation.target_pixel_size_um,
                    help="rescale to this um per pixel before segmenting and cropping (default: no rescaling)")
    sg.add_argument("--clahe", action="store_true", help="CLAHE contrast normalisation of the crops")
    sg.add_argument("--cell-diameter", type=arg(validation.DIAMETER_UM), default=defaults.cell_diameter_um,
                    help="typical cell diameter in um (default: measured on each image)")
    sg.add_argument("--cell-diameter-px", type=arg(validation.DIAMETER_PX), default=defaults.cell_diameter_px,
                    help="typical cell diameter in working pixels (default: measured on each image)")
    sg.add_argument("--crop-size", type=arg(validation.CROP_SIZE), default=defaults.crop_size,
                    help="side of the square crop around each cell, in pixels")
    sg.add_argument("--mask-background", action="store_true", help="blank everything outside the cell mask")
    add_border_options(sg, defaults.drop_border_cells)
    sg.add_argument("--tile-size", type=arg(validation.TILE_SIZE), default=defaults.tile_size,
                    help="tile side in working pixels")
    sg.add_argument("--overlap", type=arg(validation.OVERLAP), default=defaults.overlap,
                    help="tile overlap in pixels (default: 1.5 cell diameters)")
    sg.add_argument("--device", type=device, default=defaults.device, help="device for SAM")
    sg.add_argument("--checkpoint", type=Path, default=None, help="SAM checkpoint file to use directly")
    add_offline_option(sg)
    sg.add_argument("--quiet", action="store_true", help="no progress bars or per-image lines")
    add_engine_options(sg, DEFAULT_SHARD_IMAGES, "images")


def add_border_options(parser: argparse.ArgumentParser, drop_by_default: bool | None,
                       keep_help: str = argparse.SUPPRESS) -> None:
    """``--drop-border-cells`` and ``--keep-border-cells`` (the default, so hidden where the default applies);
    ``drop_by_default`` None: neither given keeps what is saved (a project's setting)."""
    border = parser.add_mutually_exclusive_group()
    border.add_argument("--drop-border-cells", dest="drop_border_cells", action="store_true",
                        default=drop_by_default,
                        help="leave out cells touching the image border (counted in the notes); by default "
                             "they are kept and flagged touches_border")
    border.add_argument("--keep-border-cells", dest="drop_border_cells", action="store_false", help=keep_help)


def settings_from_args(args: argparse.Namespace) -> SegmentSettings:
    return SegmentSettings(
        segmenter=args.segmenter, objects=args.objects, pixel_size_um=args.pixel_size,
        cell_diameter_um=args.cell_diameter, cell_diameter_px=args.cell_diameter_px,
        drop_border_cells=args.drop_border_cells, tile_size=args.tile_size, overlap=args.overlap,
        crop_size=args.crop_size, mask_background=args.mask_background, device=args.device,
        checkpoint=str(args.checkpoint) if args.checkpoint else None,
        normalisation=Normalisation(clahe=args.clahe, target_pixel_size_um=args.target_pixel_size))


def cmd_segment(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        raise CellSearchError(f"no such file or folder: {', '.join(missing)}")
    settings = settings_from_args(args)
    if settings.segmenter != Segmenter.CLASSICAL:  # the classical segmenter runs on the CPU whatever --device says
        check_device_available(settings.device)
    check_engine_options(args)
    if args.engine == "local":
        summary = run(segment_images(args.inputs, args.out, settings), args.quiet)
    else:
        with ray_engine(args) as engine:
            summary = run(sharded_segment_job(args.inputs, args.out, settings, engine, args.shard_size,
                                              work_dir=segment_work_dir(args)), args.quiet)
    for problem in summary.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if not args.quiet and summary.settings.get("segmenter_choice"):
        print(summary.settings["segmenter_choice"])
    for image in summary.per_image:
        if image.problem is None and not args.quiet:
            print(f"{field_note(image)} ({image.seconds:.1f} s)")
    print(f"{plural(summary.cells, 'cell')} from {summary.images_done} of {plural(summary.images, 'image')} "
          f"-> {args.out / 'cells.csv'}")
    if summary.images_done == 0:
        raise CellSearchError("no image could be segmented (see the skipped lines above)")
    return 0
