"""SAM and MobileSAM: model building from the weights folder, proposal-prompted segmentation, and
segment-anything's automatic mask generator (dense point grid) as the reference to beat.

Prompting: instead of a dense grid of 1024 points (each decoded and upsampled to full size), cells are
proposed by the classical segmenter and each proposal's box (grown by 10 %) is given to SAM as a prompt.
One encoder pass per tile, one decoder call per proposal batch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import partial
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


# segment_anything.build_sam's encoder settings per size; TinyViT's are MobileSAM's setup_model()
_VIT_ENCODERS = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}
_TINY_VIT = dict(img_size=1024, in_chans=3, num_classes=1000, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
                 num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
                 drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
                 layer_lr_decay=0.8)


def _image_encoder(spec: ModelSpec):
    """The image encoder with the real settings, overridden by ``spec.options`` (tests: fewer blocks, or
    a smaller ``img_size`` for the ViTs; TinyViT only runs at 1024 px)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT

    if spec.arch == "vit_t":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _tiny_vit_class()(**{**_TINY_VIT, **spec.options})
    settings = dict(img_size=1024, patch_size=16, mlp_ratio=4, qkv_bias=True, use_rel_pos=True, window_size=14,
                    out_chans=256, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), **_VIT_ENCODERS[spec.arch])
    return ImageEncoderViT(**{**settings, **spec.options})


def _assemble(encoder):
    """segment-anything's Sam around an image encoder (prompt encoder and mask decoder as in build_sam)."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    size = encoder.img_size
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(size // 16, size // 16),
                                     input_image_size=(size, size), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                                 transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )


def fit_position_tables(state: dict, model) -> dict:
    """Resample a checkpoint's position tables to the encoder's input size (a ViT built for fewer than
    1024 px): the absolute position embedding bicubically, the global blocks' relative tables linearly."""
    import torch.nn.functional as F

    target = model.state_dict()
    for key, value in list(state.items()):
        want = target.get(key)
        if want is None or want.shape == value.shape:
            continue
        if key.endswith("image_encoder.pos_embed") and value.ndim == 4:  # (1, H, W, C)
            state[key] = F.interpolate(value.permute(0, 3, 1, 2).float(), size=tuple(want.shape[1:3]),
                                       mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        elif ".attn.rel_pos_" in key and value.ndim == 2:  # (2S-1, head_dim)
            state[key] = F.interpolate(value.T[None].float(), size=want.shape[0], mode="linear",
                                       align_corners=False)[0].T
    return state


def build_sam(spec: ModelSpec, checkpoint: Path | str | None = None, device: str = "cpu", seed: int = 0):
    """segment-anything ``Sam`` for vit_t/b/l/h; ``checkpoint='random'`` gives random weights (tests)."""
    import torch

    torch.manual_seed(seed)
    model = _assemble(_image_encoder(spec))
    if checkpoint != "random":
        path = Path(checkpoint) if checkpoint else require_weights(spec)
        state = fit_position_tables(load_state_dict(path), model)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise CellSearchError(f"{path}: not a {spec.id} checkpoint "
                                  f"({str(exc).splitlines()[-1].strip()[:200]})") from None
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
