import csv
import json

import numpy as np
import pytest
import tifffile
from conftest import SHARED, needs_shared
from PIL import Image

from cellsearch_gui.cli import main
from cellsearch_gui.core.app.segment import segment_images
from cellsearch_gui.core.io.dataset import scan_query
from cellsearch_gui.core.io.fields import Field
from cellsearch_gui.core.jobs import run_job
from cellsearch_gui.core.segmentation.masks import decode_rle, encode_rle
from cellsearch_gui.core.segmentation.settings import SegmentSettings
from cellsearch_gui.core.segmentation.tiling import tiles

RADIUS = 30


def disks_image(size, centres, radius=RADIUS):
    import cv2

    img = np.full((size, size, 3), 235, np.uint8)
    for y, x in centres:
        cv2.circle(img, (int(x), int(y)), radius, (120, 60, 150), -1)
    return img


def seam_centres(size, step):
    """Cells centred on every seam crossing, on the seams between crossings and at tile corners."""
    seams = list(range(step, size, step))
    pts = [(s, t) for s in seams for t in seams]  # crossings
    pts += [(s, t + step // 2) for s in seams for t in range(0, size - step // 2, step)]  # horizontal seams
    pts += [(t + step // 2, s) for s in seams for t in range(0, size - step // 2, step)]  # vertical seams
    pts += [(s + 0.5, t + step // 4) for s in seams for t in range(0, size, step)]  # half a pixel off a seam
    return [(y, x) for y, x in pts if RADIUS + 5 < y < size - RADIUS - 5 and RADIUS + 5 < x < size - RADIUS - 5]


def _cells(out):
    with open(out / "cells.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("tile_size", [400, 512])
def test_cells_on_tile_seams_are_kept_once_and_whole(tmp_path, tile_size):
    size = 1600
    centres = seam_centres(size, tile_size)
    path = tmp_path / "stitched.tif"
    tifffile.imwrite(path, disks_image(size, centres))
    settings = SegmentSettings(cell_diameter_px=2 * RADIUS, tile_size=tile_size, overlap=2 * RADIUS + 10)
    summary = run_job(segment_images([path], tmp_path / "out", settings))
    assert summary.per_image[0].tiles == (size // tile_size + (size % tile_size > 0)) ** 2
    rows = _cells(tmp_path / "out")
    assert len(rows) == len(centres)
    found = np.array([[float(r["centroid_y"]), float(r["centroid_x"])] for r in rows])
    for y, x in centres:
        dist = np.hypot(found[:, 0] - y, found[:, 1] - x)
        assert dist.min() < 1.5
    areas = np.array([int(r["area_px"]) for r in rows])
    assert (np.abs(areas - np.pi * RADIUS ** 2) < 0.08 * np.pi * RADIUS ** 2).all()  # none cut in half
    assert len({r["cell_id"] for r in rows}) == len(rows)


def test_tiled_and_whole_image_agree(tmp_path):
    size = 1200
    rng = np.random.default_rng(3)
    centres = [(y, x) for y, x in rng.uniform(40, size - 40, (60, 2))]
    img = disks_image(size, centres, radius=18)
    Image.fromarray(img).save(tmp_path / "f.png")
    whole = SegmentSettings(cell_diameter_px=36, tile_size=4096)
    tiled = SegmentSettings(cell_diameter_px=36, tile_size=256, overlap=60)
    run_job(segment_images([tmp_path / "f.png"], tmp_path / "a", whole))
    run_job(segment_images([tmp_path / "f.png"], tmp_path / "b", tiled))
    a = {(r["bbox_x0"], r["bbox_y0"], r["area_px"]) for r in _cells(tmp_path / "a")}
    b = {(r["bbox_x0"], r["bbox_y0"], r["area_px"]) for r in _cells(tmp_path / "b")}
    assert a == b and len(a) > 30


def test_tiles_cover_the_image_exactly():
    cover = np.zeros((1000, 1300), int)
    for t in tiles(1000, 1300, 300, 50):
        cover[t.core_y0 : t.core_y1, t.core_x0 : t.core_x1] += 1
        assert t.y0 <= t.core_y0 and t.y1 >= t.core_y1
    assert (cover == 1).all()


def test_rle_roundtrip(rng):
    for shape in [(1, 1), (7, 3), (40, 41)]:
        mask = rng.random(shape) > 0.5
        assert np.array_equal(decode_rle(encode_rle(mask)), mask)
    assert np.array_equal(decode_rle(encode_rle(np.ones((4, 4), bool))), np.ones((4, 4), bool))


def test_pixel_size_from_metadata_and_rescaling(tmp_path):
    size = 800
    img = disks_image(size, [(200, 200), (400, 500), (600, 300)], radius=40)
    path = tmp_path / "ome.ome.tif"
    tifffile.imwrite(path, img, photometric="rgb", metadata={"PhysicalSizeX": 0.19, "PhysicalSizeY": 0.19,
                                                               "PhysicalSizeXUnit": "µm"})
    with Field(path) as field:
        assert field.info.pixel_size_um == pytest.approx(0.19)
    imagej = tmp_path / "ij.tif"
    tifffile.imwrite(imagej, img[:, :, 0], imagej=True, resolution=(1 / 0.322, 1 / 0.322),
                     metadata={"unit": "um"})
    with Field(imagej) as field:
        assert field.info.pixel_size_um == pytest.approx(0.322, rel=1e-3)
    settings = SegmentSettings(cell_diameter_um=15.2, crop_size=64)
    settings.normalisation.target_pixel_size_um = 0.322  # 0.19 / 0.322 = 0.59
    run_job(segment_images([path], tmp_path / "out", settings))
    rows = _cells(tmp_path / "out")
    assert len(rows) == 3
    assert float(rows[0]["scale"]) == pytest.approx(0.19 / 0.322, rel=1e-4)
    assert float(rows[0]["area_um2"]) == pytest.approx(np.pi * 40 ** 2 * 0.19 ** 2, rel=0.08)
    crop = np.array(Image.open(tmp_path / "out" / rows[0]["crop_path"]))
    assert crop.shape == (64, 64, 3)


def test_sixteen_bit_grayscale_field(tmp_path):
    img = disks_image(600, [(150, 150), (300, 420)], radius=35)[:, :, 1].astype(np.uint16) * 200
    tifffile.imwrite(tmp_path / "g16.tif", img)
    run_job(segment_images([tmp_path / "g16.tif"], tmp_path / "out", SegmentSettings(cell_diameter_px=70)))
    assert len(_cells(tmp_path / "out")) == 2


def test_bad_files_are_reported_and_the_batch_continues(tmp_path, capsys):
    folder = tmp_path / "in_ünïcødé"
    folder.mkdir()
    Image.fromarray(disks_image(400, [(200, 200)], radius=40)).save(folder / "good_zelle.png")
    Image.fromarray(disks_image(400, [(200, 200)], radius=40)).save(folder / "truncated.png")
    data = (folder / "truncated.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 3])
    (folder / "zero.tif").write_bytes(b"")
    (folder / "text.tif").write_text("not a tiff at all")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(folder / "one_pixel.png")
    Image.fromarray(np.full((300, 300, 3), 230, np.uint8)).save(folder / "empty_field.png")
    # a TIFF whose header claims 10^6 x 10^6 pixels
    bomb = folder / "bomb.tif"
    tifffile.imwrite(bomb, np.zeros((8, 8), np.uint8))
    raw = bytearray(bomb.read_bytes())
    with tifffile.TiffFile(bomb) as tif:
        for tag in ("ImageWidth", "ImageLength"):
            t = tif.pages.first.tags[tag]
            raw[t.valueoffset : t.valueoffset + 4] = (10 ** 6).to_bytes(4, "little")
    bomb.write_bytes(bytes(raw))
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--out", str(out), "--cell-diameter-px", "80", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "truncated.png: corrupt or truncated" in err
    assert "zero.tif: empty file" in err
    assert "text.tif: not a readable TIFF" in err
    assert "one_pixel.png: image is only 1x1" in err
    assert "bomb.tif: header claims 1000000 x 1000000 pixels" in err
    summary = json.loads((out / "segment.json").read_text())
    by_name = {p["path"].split("/")[-1]: p for p in summary["per_image"]}
    assert by_name["good_zelle.png"]["cells"] == 1
    assert by_name["empty_field.png"]["cells"] == 0 and by_name["empty_field.png"]["problem"] is None
    assert len(_cells(out)) == 1


def test_segment_output_is_a_query_for_classify(tmp_path):
    Image.fromarray(disks_image(500, [(120, 120), (300, 350)], radius=40)).save(tmp_path / "f.png")
    run_job(segment_images([tmp_path / "f.png"], tmp_path / "seg", SegmentSettings(cell_diameter_px=80)))
    crops = scan_query(tmp_path / "seg")
    assert len(crops) == 2 and not crops.labelled
    assert all(p.is_file() and p.suffix == ".png" for p in crops.paths)


def test_mask_background_blanks_neighbours(tmp_path):
    img = disks_image(400, [(200, 200), (200, 275)], radius=30)  # two touching-close cells
    Image.fromarray(img).save(tmp_path / "f.png")
    run_job(segment_images([tmp_path / "f.png"], tmp_path / "o", SegmentSettings(
        cell_diameter_px=60, crop_size=128, mask_background=True)))
    rows = _cells(tmp_path / "o")
    assert len(rows) == 2
    crop = np.array(Image.open(tmp_path / "o" / rows[0]["crop_path"])).astype(int)
    stained = (np.abs(crop - [120, 60, 150]).sum(-1) < 40)
    assert 0.8 * np.pi * 30 ** 2 < stained.sum() < 1.2 * np.pi * 30 ** 2  # only its own cell remains


@needs_shared
def test_mobilesam_real_weights_finds_the_white_cell(real_weights):
    from cellsearch_gui.core.io.images import read_rgb
    from cellsearch_gui.core.models import install
    from cellsearch_gui.core.segmentation.classical import ClassicalSegmenter
    from cellsearch_gui.core.segmentation.masks import box_iou
    from cellsearch_gui.core.segmentation.sam import SamSegmenter

    install.import_weights("mobilesam", SHARED / "models" / "mobile_sam_vit_t.pt")
    rgb = read_rgb(SHARED / "data" / "bccd_fov" / "JPEGImages" / "BloodImage_00000.jpg")
    seg = SamSegmenter("mobilesam", proposals=ClassicalSegmenter(objects="nucleated", cell_diameter_px=160))
    masks = seg.segment(rgb)
    assert len(masks) == 1
    assert box_iou(masks[0].bbox, (260, 177, 491, 376)) > 0.7
    assert masks[0].score > 0.8 and masks[0].stability > 0.7


def test_sam_random_weights_run_through_the_same_path():
    from cellsearch_gui.core.segmentation.classical import ClassicalSegmenter
    from cellsearch_gui.core.segmentation.sam import SamSegmenter

    img = disks_image(256, [(128, 128)], radius=40)
    seg = SamSegmenter("mobilesam", proposals=ClassicalSegmenter(cell_diameter_px=80), checkpoint="random",
                       min_predicted_iou=-1e9, min_stability=-1e9)
    masks = seg.segment(img)
    assert len(masks) <= 1  # random decoder: runs, returns at most one mask per proposal


@pytest.mark.slow
def test_sam_vit_b_random_weights_build_and_run():
    from cellsearch_gui.core.segmentation.classical import ClassicalSegmenter
    from cellsearch_gui.core.segmentation.sam import SamSegmenter

    seg = SamSegmenter("sam_vit_b", proposals=ClassicalSegmenter(cell_diameter_px=80), checkpoint="random",
                       min_predicted_iou=-1e9, min_stability=-1e9)
    assert len(seg.segment(disks_image(256, [(128, 128)], radius=40))) <= 1


def test_every_segmenter_serves_the_segmenter_protocol():
    from cellsearch_gui.core.segmentation.base import Segmenter
    from cellsearch_gui.core.segmentation.classical import ClassicalSegmenter
    from cellsearch_gui.core.segmentation.sam import SamGridSegmenter, SamSegmenter
    from cellsearch_gui.core.segmentation.settings import SEGMENTERS, make_segmenter

    for segmenter in (ClassicalSegmenter(), SamSegmenter("mobilesam"), SamGridSegmenter("mobilesam")):
        assert isinstance(segmenter, Segmenter), segmenter  # built lazily: no weights are read here
    for name in SEGMENTERS:
        assert isinstance(make_segmenter(SegmentSettings(segmenter=name), 40.0), Segmenter)
