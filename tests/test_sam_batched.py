"""Tiles batched through SAM's encoder give the masks of one tile at a time, and those of segment-anything's
own SamPredictor.set_image path (real MobileSAM weights, BCCD fields)."""

import numpy as np
import pytest
from conftest import SHARED, needs_shared

from cellsearch_gui.core.io.fields import Field
from cellsearch_gui.core.io.images import read_rgb
from cellsearch_gui.core.jobs import CancelToken, run_job
from cellsearch_gui.core.segmentation.classical import ClassicalSegmenter
from cellsearch_gui.core.segmentation.fields import segment_field, tiles_per_call
from cellsearch_gui.core.segmentation.sam import SamSegmenter
from cellsearch_gui.core.segmentation.settings import SegmentSettings

FOV = SHARED / "data" / "bccd_fov" / "JPEGImages"
WEIGHTS = SHARED / "models" / "mobile_sam_vit_t.pt"
pytestmark = [needs_shared, pytest.mark.skipif(not WEIGHTS.is_file(), reason="no MobileSAM weights")]


def _sam(tile_batch: int = 1) -> SamSegmenter:
    return SamSegmenter("mobilesam", proposals=ClassicalSegmenter(objects="nucleated", cell_diameter_px=160),
                        checkpoint=str(WEIGHTS), tile_batch=tile_batch)


def _set_image_masks(seg: SamSegmenter, rgb: np.ndarray) -> list[np.ndarray]:
    """The masks as segment-anything's predictor gives them: set_image, then box prompts."""
    import torch

    proposals = seg.proposals.segment(rgb)
    predictor = seg.predictor
    with torch.inference_mode():
        predictor.set_image(rgb)
        boxes = torch.tensor([seg._prompt_box(m, rgb.shape) for m in proposals], dtype=torch.float32)
        logits, _, _ = predictor.predict_torch(None, None, boxes=predictor.transform.apply_boxes_torch(
            boxes, rgb.shape[:2]), multimask_output=False, return_logits=True)
    return list((logits[:, 0] > predictor.model.mask_threshold).numpy())


def test_one_tile_matches_the_predictor_path():
    rgb = read_rgb(FOV / "BloodImage_00000.jpg")
    seg = _sam()
    expected = _set_image_masks(seg, rgb)
    got = seg.segment(rgb)
    assert len(got) == len(expected) >= 1
    for cell, full in zip(got, expected):
        mine = np.zeros(rgb.shape[:2], bool)
        mine[cell.y0 : cell.y0 + cell.mask.shape[0], cell.x0 : cell.x0 + cell.mask.shape[1]] = cell.mask
        assert (mine != full).sum() <= 0.001 * full.sum()  # same mask (batched float sums may flip a pixel)


def _stitched(tmp_path):
    from PIL import Image

    rgb = np.concatenate([read_rgb(FOV / f"BloodImage_0000{i}.jpg") for i in (0, 1)], axis=1)  # 480 x 1280
    Image.fromarray(rgb).save(tmp_path / "field.png")
    return tmp_path / "field.png"


def _field_masks(path, seg) -> list[tuple]:
    settings = SegmentSettings(segmenter="mobilesam", tile_size=640, overlap=200, device="cpu")
    with Field(path) as field_:
        masks, tiles, result = run_job(segment_field(field_, seg, settings, 160.0, 1.0, CancelToken()))
    return [(m.y0, m.x0, m.mask.shape, tile) for m, tile in zip(masks, tiles)], masks, result


def test_tiles_batched_through_the_encoder_give_the_same_masks(tmp_path):
    path = _stitched(tmp_path)
    one, one_masks, one_result = _field_masks(path, _sam(tile_batch=1))
    two, two_masks, two_result = _field_masks(path, _sam(tile_batch=2))
    assert one_result.tiles == 2 and tiles_per_call(_sam(tile_batch=2)) == 2
    assert one == two and len(one) >= 2 and one_result.dropped == two_result.dropped
    for a, b in zip(one_masks, two_masks):
        assert (a.mask != b.mask).sum() <= 0.001 * a.mask.sum()


def test_a_classical_segmenter_goes_tile_by_tile():
    assert tiles_per_call(ClassicalSegmenter()) == 1 and tiles_per_call(_sam(tile_batch=8)) == 8
