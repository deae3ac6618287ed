"""SAM and MobileSAM: model building from the weights folder, proposal-prompted segmentation, and
segment-anything's automatic mask generator (dense point grid) as the reference to beat.

Prompting: instead of a dense grid of 1024 points (each decoded and upsampled to full size), cells are
proposed by the classical segmenter and each proposal's box (grown by 10 %) is given to SAM as a prompt.
One encoder pass per batch of tiles, one decoder call per proposal batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from cellsearch_gui.core.models.registry import get_spec
from cellsearch_gui.core.models.sam_net import build_sam
from cellsearch_gui.core.options import Segmenter
from cellsearch_gui.core.segmentation.classical import ClassicalSegmenter
from cellsearch_gui.core.segmentation.masks import OUTLINE_KEPT, CellMask, from_full

SAM_SEGMENTERS = tuple(s for s in Segmenter if s not in (Segmenter.CLASSICAL, Segmenter.AUTO))
SAM_REASON = OUTLINE_KEPT
GPU_TILE_BATCH = {"mobilesam": 8, "sam_vit_b": 2}  # tiles per encoder pass on a GPU (others: 1); CPU: 1


def tile_batch_for(model_id: str, device: str) -> int:
    """Tiles per encoder pass: one on the CPU (no gain measured there), more on a GPU."""
    return GPU_TILE_BATCH.get(model_id, 1) if device.startswith("cuda") else 1


# segment_anything.build_sam's encoder settings per size; TinyViT's are MobileSAM's setup_model()


@dataclass
class SamSegmenter:
    """Proposal-prompted SAM: classical proposals -> box prompts -> one mask per cell."""

    model_id: str = "mobilesam"
    proposals: ClassicalSegmenter = field(default_factory=ClassicalSegmenter)
    device: str = "cpu"
    batch: int = 64  # box prompts decoded at once
    tile_batch: int = 1  # tiles through the encoder at once (segment_field); make_segmenter: more on a GPU
    min_predicted_iou: float = 0.5
    min_stability: float = 0.6  # IoU of the mask at logit thresholds -1 and +1 (faint cytoplasm edges score 0.7)
    box_margin: float = 0.1
    checkpoint: str | None = None
    # a mask below the bar (SAM's predicted IoU or stability) keeps the proposal's classical outline, its
    # score and stability SAM's (so it can be filtered): no cell is lost to a poor SAM mask
    keep_proposal_outline: bool = True

    def __post_init__(self):
        self.spec = get_spec(self.model_id)
        self._predictor = None
        self.name = self.model_id
        self.dropped: dict[str, int] = {}  # what the last ``segment`` call left out, by reason

    @property
    def predictor(self):
        if self._predictor is None:
            from segment_anything import SamPredictor

            self._predictor = SamPredictor(build_sam(self.spec, self.checkpoint, self.device))
        return self._predictor

    def prepare(self, overview: np.ndarray) -> None:
        self.proposals.prepare(overview)

    def _prompt_box(self, proposal: CellMask, shape) -> list[float]:
        """The proposal's box grown by ``box_margin`` per side: SAM then finds the cell's own edge.
        (A centre point prompt pulled masks towards the nucleus; box-only gave higher IoU on BCCD.)"""
        x0, y0, x1, y1 = proposal.bbox
        dx, dy = self.box_margin * (x1 - x0), self.box_margin * (y1 - y0)
        return [max(0, x0 - dx), max(0, y0 - dy), min(shape[1], x1 + dx), min(shape[0], y1 + dy)]

    def segment(self, rgb: np.ndarray) -> list[CellMask]:
        masks, self.dropped = self.segment_many([rgb])[0]
        return masks

    def segment_many(self, rgbs: list[np.ndarray]) -> list[tuple[list[CellMask], dict[str, int]]]:
        """Several tiles at once: one encoder pass for all of them, then each tile's prompts decoded in
        batches of ``batch``. Per tile: its masks and what was left out, by reason."""
        import torch

        proposals = []
        for rgb in rgbs:
            found = self.proposals.segment(rgb)
            proposals.append((found, dict(self.proposals.dropped)))
        todo = [i for i, (found, _) in enumerate(proposals) if found]
        with torch.inference_mode():
            features = self._encode([rgbs[i] for i in todo]) if todo else None
            results = [([], dropped) for _, dropped in proposals]
            for row, i in enumerate(todo):
                results[i] = (self._decode(rgbs[i], features[row : row + 1], *proposals[i]), proposals[i][1])
        return results

    def _encode(self, rgbs: list[np.ndarray]):
        """Image embeddings of tiles (1024 px long side each, padded), in one batch: as ``set_image`` does
        for one image."""
        import torch

        predictor = self.predictor
        batch = []
        for rgb in rgbs:
            image = torch.as_tensor(predictor.transform.apply_image(rgb), device=self.device)
            batch.append(predictor.model.preprocess(image.permute(2, 0, 1).contiguous()[None]))
        return predictor.model.image_encoder(torch.cat(batch))

    def _decode(self, rgb: np.ndarray, features, proposals: list[CellMask], dropped: dict) -> list[CellMask]:
        """One mask per proposal (box prompts, ``batch`` at a time) from the tile's image embedding."""
        import torch
        from segment_anything.utils.amg import calculate_stability_score

        predictor = self.predictor
        predictor.reset_image()
        predictor.features, predictor.is_image_set = features, True
        predictor.original_size = rgb.shape[:2]
        predictor.input_size = predictor.transform.get_preprocess_shape(*rgb.shape[:2], predictor.transform.target_length)
        out = []
        for start in range(0, len(proposals), self.batch):
            chunk = proposals[start : start + self.batch]
            boxes = torch.tensor([self._prompt_box(m, rgb.shape) for m in chunk], dtype=torch.float32,
                                 device=self.device)
            tb = predictor.transform.apply_boxes_torch(boxes, rgb.shape[:2])
            logits, iou, _ = predictor.predict_torch(point_coords=None, point_labels=None, boxes=tb,
                                                     multimask_output=False, return_logits=True)
            threshold = predictor.model.mask_threshold
            stability = calculate_stability_score(logits[:, 0], threshold, 1.0).cpu().numpy()
            masks = (logits[:, 0] > threshold).cpu().numpy()
            for proposal, mask, score, stable in zip(chunk, masks, iou[:, 0].cpu().numpy(), stability):
                if score < self.min_predicted_iou or stable < self.min_stability:
                    dropped[SAM_REASON] = dropped.get(SAM_REASON, 0) + 1
                    if self.keep_proposal_outline:  # the cell is not lost: its classical outline stands
                        out.append(replace(proposal, score=float(score), stability=float(stable)))
                    continue
                cell = from_full(mask, float(score), float(stable))
                if cell is not None:
                    out.append(replace(cell, outline=proposal))
        predictor.reset_image()
        return out


@dataclass
class SamGridSegmenter:
    """segment-anything's SamAutomaticMaskGenerator (dense point grid), default settings: the baseline."""

    model_id: str = "mobilesam"
    device: str = "cpu"
    points_per_side: int = 32
    checkpoint: str | None = None
    generator_options: dict = field(default_factory=dict)

    def __post_init__(self):
        self.spec = get_spec(self.model_id)
        self._generator = None
        self.name = f"{self.model_id}_grid{self.points_per_side}"

    def prepare(self, overview: np.ndarray) -> None:
        """Nothing to fix per field: the point grid covers each tile on its own."""

    def segment(self, rgb: np.ndarray) -> list[CellMask]:
        import torch
        from segment_anything import SamAutomaticMaskGenerator

        if self._generator is None:
            self._generator = SamAutomaticMaskGenerator(build_sam(self.spec, self.checkpoint, self.device),
                                                        points_per_side=self.points_per_side,
                                                        **self.generator_options)
        with torch.inference_mode():
            records = self._generator.generate(rgb)
        masks = [from_full(r["segmentation"], r["predicted_iou"], r["stability_score"]) for r in records]
        return [m for m in masks if m is not None]
