"""SAM and MobileSAM: model building from the weights folder, proposal-prompted segmentation, and
segment-anything's automatic mask generator (dense point grid) as the reference to beat.

Prompting: instead of a dense grid of 1024 points (each decoded and upsampled to full size), cells are
proposed by the classical segmenter and each proposal's box (grown by 10 %) is given to SAM as a prompt.
One encoder pass per tile, one decoder call per proposal batch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.registry import ModelSpec, get_spec
from cellsearch_gui.core.segmentation.classical import ClassicalSegmenter
from cellsearch_gui.core.segmentation.masks import CellMask, from_full
from cellsearch_gui.core.weights import load_state_dict, require_weights

SAM_SEGMENTERS = ("mobilesam", "sam_vit_b", "sam_vit_l", "sam_vit_h")


def _tiny_vit_class():
    """Import MobileSAM's TinyViT without letting it overwrite timm's own tiny_vit registrations."""
    from timm.models import _registry

    saved = {name: value.copy() for name, value in vars(_registry).items()
             if name.startswith("_model") and isinstance(value, (dict, set))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mobile_sam.modeling.tiny_vit_sam import TinyViT
    for name, value in saved.items():
        current = getattr(_registry, name)
        current.clear()
        current.update(value)
    return TinyViT


def _build_vit_t():
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    tiny_vit = _tiny_vit_class()
    return Sam(
        image_encoder=tiny_vit(img_size=1024, in_chans=3, num_classes=1000, embed_dims=[64, 128, 160, 320],
                               depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7],
                               mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
                               mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                     mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                                 transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )


def build_sam(spec: ModelSpec, checkpoint: Path | str | None = None, device: str = "cpu"):
    """segment-anything ``Sam`` for vit_t/b/l/h; ``checkpoint='random'`` gives random weights (tests)."""
    import torch
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    model = _build_vit_t() if spec.arch == "vit_t" else sam_model_registry[spec.arch](checkpoint=None)
    if checkpoint != "random":
        path = Path(checkpoint) if checkpoint else require_weights(spec)
        state = load_state_dict(path)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CellSearchError(f"{path}: not a {spec.id} checkpoint (missing {list(missing)[:3]}, "
                                  f"unexpected {list(unexpected)[:3]})")
    return model.eval().to(device)


@dataclass
class SamSegmenter:
    """Proposal-prompted SAM: classical proposals -> box prompts -> one mask per cell."""

    model_id: str = "mobilesam"
    proposals: ClassicalSegmenter = field(default_factory=ClassicalSegmenter)
    device: str = "cpu"
    batch: int = 64
    min_predicted_iou: float = 0.5
    min_stability: float = 0.6  # IoU of the mask at logit thresholds -1 and +1 (faint cytoplasm edges score 0.7)
    box_margin: float = 0.1
    checkpoint: str | None = None

    def __post_init__(self):
        self.spec = get_spec(self.model_id)
        self._predictor = None
        self.name = self.model_id

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
        import torch
        from segment_anything.utils.amg import calculate_stability_score

        proposals = self.proposals.segment(rgb)
        if not proposals:
            return []
        predictor = self.predictor
        with torch.inference_mode():
            predictor.set_image(rgb)
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
                for mask, score, stable in zip(masks, iou[:, 0].cpu().numpy(), stability):
                    if score < self.min_predicted_iou or stable < self.min_stability:
                        continue
                    cell = from_full(mask, float(score), float(stable))
                    if cell is not None:
                        out.append(cell)
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
