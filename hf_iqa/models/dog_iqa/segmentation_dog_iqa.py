"""SAM2 point-grid automatic mask generation and Dog-IQA's region rules, without torchvision.

Follows the official SAM2 automatic mask generator (`facebookresearch/sam2`, `automatic_mask_generator.py`,
`utils/amg.py`) with `crop_n_layers=0` and `use_m2m=False`, as Dog-IQA runs it:
  n x n points at cell centres -> 3 masks per point -> keep predicted IoU `>` pred_iou_thresh -> upsample the
  256 x 256 logits to the native resolution (bilinear) -> keep stability `>=` stability_score_thresh -> binarise at
  `mask_threshold` -> boxes (inclusive max, as the official `batched_mask_to_box`) -> box NMS scored by predicted IoU.
Filtering by predicted IoU before upsampling gives the same masks as the official order and saves most of the
memory. The optional low-resolution hole/sprinkle filling of SAM2 (a CUDA extension there) is not applied.
Then Dog-IQA's `get_final_mask`: keep masks with area >= min_region_area, add the leftover region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


# ----------------------------------------------------------------------------------------------------------------
# SAM2 input
# ----------------------------------------------------------------------------------------------------------------
def preprocess_for_sam2(
    image: np.ndarray, size: int, mean: list[float], std: list[float], resize: str = "square"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """HWC uint8 image -> normalised (3, size, size) float tensor and the (h, w) of the image inside it.

    `"square"` stretches to size x size (official SAM2); `"longest_side"` keeps the aspect ratio and pads the
    bottom/right with zeros (SAM v1). Resizing is bilinear on float channels (no uint8 rounding)."""
    height, width = image.shape[:2]
    if resize == "square":
        new_h = new_w = size
    else:
        scale = size / max(height, width)
        new_h, new_w = max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))
    channels = []
    for c in range(3):
        plane = Image.fromarray(image[:, :, c].astype(np.float32) / 255.0)
        channels.append(np.asarray(plane.resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.float32))
    pixels = torch.from_numpy(np.stack(channels))
    pixels = (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    if (new_h, new_w) != (size, size):
        pixels = F.pad(pixels, (0, size - new_w, 0, size - new_h))
    return pixels, (new_h, new_w)


def build_point_grid(points_per_side: int) -> np.ndarray:
    """(n*n, 2) normalised (x, y) points at the cell centres, x varying fastest (official `build_point_grid`)."""
    offset = 1 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    xs = np.tile(side[None, :], (points_per_side, 1))
    ys = np.tile(side[:, None], (1, points_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


# ----------------------------------------------------------------------------------------------------------------
# Mask filters
# ----------------------------------------------------------------------------------------------------------------
def stability_scores(mask_logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks binarised at `threshold + offset` and at `threshold - offset` (strict `>`)."""
    intersections = (mask_logits > (mask_threshold + offset)).sum(dim=(-1, -2), dtype=torch.int64)
    unions = (mask_logits > (mask_threshold - offset)).sum(dim=(-1, -2), dtype=torch.int64)
    return intersections.double() / unions.double()


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) XYXY with inclusive max (the official SAM convention); empty masks -> zeros."""
    if masks.numel() == 0:
        return torch.zeros(masks.shape[0], 4, dtype=torch.float32)
    height, width = masks.shape[-2:]
    rows = masks.any(dim=-1)
    cols = masks.any(dim=-2)
    row_idx = torch.arange(height, device=masks.device)
    col_idx = torch.arange(width, device=masks.device)
    y1 = torch.where(rows, row_idx, -1).amax(dim=-1)
    x1 = torch.where(cols, col_idx, -1).amax(dim=-1)
    y0 = torch.where(rows, row_idx, height).amin(dim=-1)
    x0 = torch.where(cols, col_idx, width).amin(dim=-1)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1).float()
    empty = ~rows.any(dim=-1)
    boxes[empty] = 0.0
    return boxes


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of XYXY boxes with area (x1 - x0) * (y1 - y0), as torchvision's `box_iou`."""
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    top_left = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def non_maximum_suppression(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the kept boxes, by decreasing score; a box is dropped when its IoU with a kept, higher-scored
    box is `>` iou_threshold (torchvision `nms` semantics)."""
    order = torch.argsort(scores, descending=True, stable=True)
    if order.numel() == 0:
        return order
    ious = box_iou(boxes[order].double(), boxes[order].double())
    suppressed = torch.zeros(order.numel(), dtype=torch.bool)
    keep = []
    for i in range(order.numel()):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= ious[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def upsample_mask_logits(
    low_res_logits: torch.Tensor, original_hw: tuple[int, int], image_size: int, valid_hw: tuple[int, int]
) -> torch.Tensor:
    """(N, h, w) low-resolution logits -> (N, H, W) float32 logits at the native resolution (bilinear)."""
    logits = low_res_logits.float()[:, None]
    if tuple(valid_hw) != (image_size, image_size):  # padded input: drop the padding first (SAM v1)
        logits = F.interpolate(logits, (image_size, image_size), mode="bilinear", align_corners=False)
        logits = logits[..., : valid_hw[0], : valid_hw[1]]
    return F.interpolate(logits, tuple(original_hw), mode="bilinear", align_corners=False)[:, 0]


def select_masks(
    low_res_logits: torch.Tensor,
    iou_preds: torch.Tensor,
    original_hw: tuple[int, int],
    *,
    pred_iou_thresh: float,
    stability_score_thresh: float,
    stability_score_offset: float,
    mask_threshold: float,
    box_nms_thresh: float,
    image_size: int | None = None,
    valid_hw: tuple[int, int] | None = None,
    chunk_size: int = 16,
) -> dict[str, torch.Tensor]:
    """Official AMG filtering of candidate masks of one image (`crop_n_layers=0`).

    low_res_logits: (N, h, w) decoder logits; iou_preds: (N,). Returns `masks` (M, H, W) bool, `boxes` (M, 4)
    inclusive XYXY, `areas` (M,) pixel counts, `iou_preds`, `stability_scores` and `indices` into the N candidates,
    ordered by decreasing predicted IoU (NMS order)."""
    image_size = image_size or low_res_logits.shape[-1]
    valid_hw = valid_hw or (image_size, image_size)
    candidates = torch.nonzero(iou_preds.float() > pred_iou_thresh).flatten() if pred_iou_thresh > 0 else None
    if candidates is None:
        candidates = torch.arange(iou_preds.numel())
    masks, stabilities, kept = [], [], []
    for start in range(0, candidates.numel(), chunk_size):
        index = candidates[start : start + chunk_size]
        logits = upsample_mask_logits(low_res_logits[index], original_hw, image_size, valid_hw)
        stability = stability_scores(logits, mask_threshold, stability_score_offset)
        keep = stability >= stability_score_thresh if stability_score_thresh > 0 else torch.ones_like(stability).bool()
        masks.append((logits[keep] > mask_threshold).cpu())
        stabilities.append(stability[keep].cpu())
        kept.append(index[keep.cpu()])
    height, width = original_hw
    if kept:
        masks_t, stability_t, kept_t = torch.cat(masks), torch.cat(stabilities), torch.cat(kept)
    else:
        masks_t = torch.zeros(0, height, width, dtype=torch.bool)
        stability_t, kept_t = torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    boxes = masks_to_boxes(masks_t)
    scores = iou_preds.float().cpu()[kept_t]
    order = non_maximum_suppression(boxes, scores, box_nms_thresh)
    return {
        "masks": masks_t[order],
        "boxes": boxes[order],
        "areas": masks_t[order].sum(dim=(-1, -2)),
        "iou_preds": scores[order],
        "stability_scores": stability_t[order],
        "indices": kept_t[order],
    }


# ----------------------------------------------------------------------------------------------------------------
# Dog-IQA regions
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Regions:
    """The scored regions of one image. `boxes` are XYXY pixel boxes with exclusive ends (crop = image[y0:y1,
    x0:x1]); `areas` are the areas used by the aggregation; the leftover region, if any, is last."""

    masks: np.ndarray  # (R, H, W) bool
    boxes: np.ndarray  # (R, 4) int64
    areas: np.ndarray  # (R,) float64
    is_leftover: np.ndarray  # (R,) bool


def region_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box of all True pixels as (x0, y0, x1, y1), ends exclusive (skimage `regionprops` convention)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, 0, mask.shape[1], mask.shape[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def build_regions(
    masks: np.ndarray,
    areas: np.ndarray,
    height: int,
    width: int,
    min_area: int,
    add_leftover: bool = True,
    leftover_area: str = "subtractive",
) -> Regions:
    """Dog-IQA's `get_final_mask`: keep masks with area >= min_area; none -> one region, the whole image; else
    append the complement of their union when `H*W - sum(kept areas)` (`"subtractive"`, overlaps counted twice) or
    its pixel count (`"exact"`) is >= min_area."""
    total = height * width
    keep = [i for i in range(len(masks)) if areas[i] >= min_area]
    if not keep:
        whole = np.ones((1, height, width), dtype=bool)
        return Regions(whole, np.array([[0, 0, width, height]]), np.array([float(total)]), np.array([True]))
    kept_masks = [masks[i] for i in keep]
    kept_areas = [float(areas[i]) for i in keep]
    leftover_flags = [False] * len(keep)
    if add_leftover:
        complement = ~np.logical_or.reduce(kept_masks)
        remain = total - sum(kept_areas) if leftover_area == "subtractive" else float(complement.sum())
        # kept even when empty (overlapping masks, subtractive area), as released: its crop is then the whole image
        if remain >= min_area:
            kept_masks.append(complement)
            kept_areas.append(float(remain))
            leftover_flags.append(True)
    boxes = np.array([region_box(m) for m in kept_masks], dtype=np.int64)
    return Regions(np.stack(kept_masks), boxes, np.array(kept_areas), np.array(leftover_flags))


def crop_region(image: np.ndarray, regions: Regions, index: int, crop_mode: str = "bbox") -> np.ndarray:
    """The view of region `index`: its bounding box cut from the original pixels (`"masked"`: pixels outside the
    region zeroed first)."""
    x0, y0, x1, y1 = (int(v) for v in regions.boxes[index])
    if crop_mode == "masked":
        image = np.where(regions.masks[index][:, :, None], image, 0).astype(image.dtype)
    return np.ascontiguousarray(image[y0:y1, x0:x1])


# ----------------------------------------------------------------------------------------------------------------
# The generator
# ----------------------------------------------------------------------------------------------------------------
class Sam2PointGridMaskGenerator:
    """Runs a transformers `Sam2Model` over an n x n point grid and applies `select_masks`."""

    def __init__(self, model, config) -> None:
        self.model = model
        self.config = config
        self.grid = build_point_grid(config.points_per_side)
        self.image_size = config.segmenter_image_size or model.config.prompt_encoder_config.image_size

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        cfg = self.config
        param = next(self.model.parameters())
        results = []
        for start in range(0, len(images), cfg.segmenter_batch_size):
            chunk = images[start : start + cfg.segmenter_batch_size]
            inputs = [
                preprocess_for_sam2(
                    img,
                    self.image_size,
                    cfg.segmenter_image_mean,
                    cfg.segmenter_image_std,
                    cfg.segmenter_resize,
                )
                for img in chunk
            ]
            pixel_values = torch.stack([p for p, _ in inputs]).to(param.device, param.dtype)
            embeddings = self.model.get_image_embeddings(pixel_values)
            for i, image in enumerate(chunk):
                valid_hw = inputs[i][1]
                image_embeddings = [e[i : i + 1] for e in embeddings]
                results.append(self._masks_for_image(image_embeddings, image.shape[:2], valid_hw))
        return results

    def _masks_for_image(self, image_embeddings, original_hw, valid_hw) -> dict[str, torch.Tensor]:
        cfg = self.config
        param = next(self.model.parameters())
        # grid -> coordinates of the model input frame (the model adds 0.5 and divides by the input size)
        scale = np.array([valid_hw[1], valid_hw[0]], dtype=np.float64)
        points = torch.from_numpy(self.grid * scale)
        logits, ious = [], []
        for start in range(0, len(points), cfg.points_per_batch):
            batch = points[start : start + cfg.points_per_batch].to(param.device, param.dtype)
            labels = torch.ones(1, batch.shape[0], 1, dtype=torch.int32, device=param.device)
            out = self.model(
                image_embeddings=image_embeddings,
                input_points=batch[None, :, None, :],
                input_labels=labels,
                multimask_output=True,
            )
            logits.append(out.pred_masks[0].flatten(0, 1).float())
            ious.append(out.iou_scores[0].flatten(0, 1).float())
        return select_masks(
            torch.cat(logits),
            torch.cat(ious),
            tuple(original_hw),
            pred_iou_thresh=cfg.pred_iou_thresh,
            stability_score_thresh=cfg.stability_score_thresh,
            stability_score_offset=cfg.stability_score_offset,
            mask_threshold=cfg.mask_threshold,
            box_nms_thresh=cfg.box_nms_thresh,
            image_size=self.image_size,
            valid_hw=valid_hw,
        )
