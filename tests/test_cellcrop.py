import numpy as np
import pytest
from conftest import PBC, needs_shared
from PIL import Image

from cellsearch_gui.core.app.segment import segment_images
from cellsearch_gui.core.crops.colour import (
    COLOUR_MODES,
    REINHARD_MEAN,
    normalise_colour,
)
from cellsearch_gui.core.crops.prepare import CropPrep, frame_cell, prepare_crop
from cellsearch_gui.core.jobs import run_job
from cellsearch_gui.core.segmentation.settings import Normalisation, SegmentSettings

STAIN = (110, 60, 170)  # purple, nucleus-like (blue minus red is high)


def blob_image(h, w, cells, background=(235, 225, 230)):
    import cv2

    img = np.zeros((h, w, 3), np.uint8)
    img[:] = background
    for (y, x, r) in cells:
        cv2.circle(img, (int(x), int(y)), int(r), STAIN, -1)
        cv2.circle(img, (int(x), int(y)), int(r * 0.45), (80, 40, 150), -1)  # darker core
    return img


def test_segment_output_and_crop_folder_share_one_path(tmp_path):
    """The same cell, cut from a segmented field and prepared from a ready-made crop, gives the same crop."""
    field = blob_image(900, 900, [(450, 430, 60)])
    Image.fromarray(field).save(tmp_path / "field.png")
    settings = SegmentSettings(objects="nucleated", pixel_size_um=0.19, cell_diameter_um=24, crop_size=128,
                               mask_background=True, normalisation=Normalisation(target_pixel_size_um=0.322))
    run_job(segment_images([tmp_path / "field.png"], tmp_path / "seg", settings))
    crops = list((tmp_path / "seg" / "crops").glob("*.png"))
    assert len(crops) == 1
    from_field = np.array(Image.open(crops[0])).astype(int)
    ready_made = field[300:620, 250:650]  # an off-centre crop from another "device" folder
    prep = CropPrep(centre=True, scale="physical", pixel_size_um=0.19, target_pixel_size_um=0.322, mask=True,
                    crop_size=128)
    from_folder, record = prepare_crop(ready_made, prep)
    assert record.cell_found and record.scale == pytest.approx(0.19 / 0.322)
    diff = np.abs(from_folder.astype(int) - from_field)
    assert diff.mean() < 3 and (diff.max(axis=2) > 60).mean() < 0.02


def test_cell_size_scale_makes_framing_device_independent():
    small = blob_image(200, 200, [(100, 100, 30)])
    large = blob_image(500, 500, [(250, 250, 75)])  # same cell imaged at 2.5x the magnification
    prep = CropPrep(centre=True, scale="cell_size", mask=True, crop_size=112)
    a, ra = prepare_crop(small, prep)
    b, rb = prepare_crop(large, prep)
    assert "own size" in ra.scale_source and rb.scale == pytest.approx(ra.scale / 2.5, rel=0.05)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 4


@pytest.mark.parametrize("case,cells,expect", [
    ("no cell", [], "no cell found"),
    ("two cells", [(60, 60, 25), (150, 150, 25)], "2 objects found"),
    ("touching the border", [(100, 8, 30)], "touches the crop border"),
])
def test_awkward_crops_get_a_record(case, cells, expect):
    img = blob_image(210, 210, cells)
    out, record = prepare_crop(img, CropPrep(centre=True, scale="cell_size", mask=True, crop_size=96))
    assert out.shape == (96, 96, 3)
    assert expect in record.note, (case, record)


def test_unknown_pixel_size_falls_back_to_cell_size_and_says_so():
    img = blob_image(200, 200, [(100, 100, 40)])
    _, record = prepare_crop(img, CropPrep(centre=True, scale="physical", crop_size=96))
    assert "pixel size unknown" in record.note and "own size" in record.scale_source


def test_two_cells_picks_the_central_one():
    img = blob_image(300, 300, [(150, 150, 40), (40, 40, 45)])
    out, record = prepare_crop(img, CropPrep(centre=True, mask=True, crop_size=100, scale="cell_size"))
    assert record.objects_found == 2
    centre = out[40:60, 40:60].astype(int)
    core = np.abs(centre - [80, 40, 150]).sum(-1) < 30
    background = np.abs(centre - [235, 225, 230]).sum(-1) < 60
    assert core[6:14, 6:14].all() and not background.any()  # the central cell's dark core sits in the middle


@pytest.mark.parametrize("mode", COLOUR_MODES)
def test_colour_modes_keep_shape_and_type(mode):
    img = blob_image(120, 120, [(60, 60, 30)])
    out = normalise_colour(img, mode, stats=(180, 140, 120, 30, 8, 8))
    assert out.shape == img.shape and out.dtype == np.uint8
    if mode == "grayscale":
        assert (out[:, :, 0] == out[:, :, 1]).all()


def test_reinhard_maps_two_devices_to_the_same_statistics():
    import cv2

    a = blob_image(150, 150, [(75, 75, 40)])
    b = np.clip(a.astype(int) * [0.8, 0.95, 1.1] + 20, 0, 255).astype(np.uint8)  # another stain and camera
    for img in (a, b):
        lab = cv2.cvtColor(normalise_colour(img, "reinhard"), cv2.COLOR_RGB2LAB).reshape(-1, 3).mean(0)
        assert lab == pytest.approx(REINHARD_MEAN, abs=4)


@needs_shared
def test_macenko_on_a_real_smear_crop():
    from cellsearch_gui.core.io.images import read_rgb

    img = read_rgb(next((PBC / "neutrophil").iterdir()))
    out = normalise_colour(img, "macenko")
    assert out.shape == img.shape and not np.array_equal(out, img)


def test_prep_tag_separates_cache_entries():
    assert CropPrep().tag() == "raw"
    assert CropPrep(mask=True, centre=True).tag() != CropPrep(centre=True).tag()
    with pytest.raises(ValueError, match="unknown colour"):
        CropPrep(colour="sepia")


def test_frame_cell_without_mask_centres_the_crop():
    img = np.arange(100 * 100 * 3, dtype=np.uint8).reshape(100, 100, 3)
    out = frame_cell(img, None, 1.0, 100, False)
    assert np.array_equal(out, img)


def test_device_reinhard_keeps_colour_differences_within_a_device():
    """Per-image Reinhard erases the colour that tells two cells apart; one transform per device keeps it."""
    import cv2

    from cellsearch_gui.core.crops.prepare import with_device_colour

    lilac = blob_image(150, 150, [(75, 75, 40)])
    red = lilac.copy()
    cell = (lilac != lilac[0, 0]).any(axis=2)
    red[cell, 1] = red[cell, 1] // 3  # less green: a more magenta-red (eosinophil-like) cell
    prep = with_device_colour(CropPrep(centre=True, mask=True, colour="device_reinhard", crop_size=96),
                              [red, lilac], read=lambda image: image)
    assert prep.device_colour is not None and len(prep.device_colour) == 6

    def a_channel(img, p):  # mean red-green axis over the cell (the masked-out background is white)
        crop = prepare_crop(img, p)[0]
        cell = (crop != 255).any(axis=2)
        return cv2.cvtColor(crop, cv2.COLOR_RGB2LAB)[:, :, 1][cell].astype(float).mean()

    per_device = a_channel(red, prep) - a_channel(lilac, prep)
    per_image = a_channel(red, CropPrep(centre=True, mask=True, colour="reinhard", crop_size=96)) - a_channel(
        lilac, CropPrep(centre=True, mask=True, colour="reinhard", crop_size=96))
    assert per_device > 2 and abs(per_image) < per_device / 4
