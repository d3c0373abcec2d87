"""Dog-IQA's torchvision-free SAM2 automatic-mask filters and region rules, on constructed mask logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_iqa.models.dog_iqa.segmentation_dog_iqa import (
    box_iou,
    build_point_grid,
    build_regions,
    crop_region,
    masks_to_boxes,
    non_maximum_suppression,
    preprocess_for_sam2,
    select_masks,
    stability_scores,
)

FILTERS = dict(pred_iou_thresh=0.9, stability_score_thresh=0.8, stability_score_offset=0.7, mask_threshold=0.0)


def test_point_grid_cell_centres_x_fastest():
    np.testing.assert_allclose(build_point_grid(2), [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    assert build_point_grid(8).shape == (64, 2)
    assert build_point_grid(8)[0, 0] == pytest.approx(1 / 16)


def test_stability_score_counts_strictly_above_the_offsets():
    logits = torch.tensor([[[2.0, 0.7, 0.5], [-0.5, -0.7, -2.0]]])
    # > 0.7: {2.0}; > -0.7: {2.0, 0.7, 0.5, -0.5}  (0.7 and -0.7 themselves are not strictly above)
    assert stability_scores(logits, 0.0, 0.7).item() == pytest.approx(1 / 4)


def test_boxes_are_inclusive_and_empty_masks_give_zeros():
    masks = torch.zeros(2, 5, 6, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    assert masks_to_boxes(masks).tolist() == [[2, 1, 4, 2], [0, 0, 0, 0]]


def test_nms_is_strict_and_ordered_by_score():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 9], [0, 0, 10, 8.9], [20, 20, 30, 30]], dtype=torch.float32)
    assert box_iou(boxes[:1], boxes[1:2]).item() == pytest.approx(0.9)
    scores = torch.tensor([0.9, 0.95, 0.5, 0.1])
    # box 1 (best score) keeps box 0 (IoU exactly 0.9 is not > 0.9) and removes box 2 (IoU 89 / 90)
    keep = non_maximum_suppression(boxes, scores, 0.9).tolist()
    assert keep == [1, 0, 3]
    keep = non_maximum_suppression(boxes, scores, 0.85).tolist()
    assert keep == [1, 3]


def _blob(height, width, y0, y1, x0, x1, inside=5.0, outside=-5.0):
    logits = torch.full((height, width), outside)
    logits[y0:y1, x0:x1] = inside
    return logits


def test_select_masks_applies_official_filters_in_order():
    h, w = 20, 30
    good = _blob(h, w, 2, 10, 3, 12)  # stable, iou 0.95 -> kept
    duplicate = good.clone()
    duplicate[5, 6] = -5.0  # same object, same box, iou 0.93 -> removed by the NMS
    low_iou = _blob(h, w, 12, 18, 15, 25)  # iou exactly 0.9 -> removed (strict >)
    unstable = _blob(h, w, 12, 18, 15, 25, inside=0.5, outside=-5.0)  # > 0.7 nowhere -> stability 0
    borderline = _blob(h, w, 12, 17, 0, 8)  # 40 px > 0.7 ...
    borderline[17, 0:8] = 0.0  # ... and 8 more in (-0.7, 0.7]: stability 40 / 48 = 0.833 -> kept
    weak = _blob(h, w, 12, 16, 20, 30)  # 40 px > 0.7 ...
    weak[16:18, 20:30] = 0.0  # ... and 20 more: 40 / 60 = 0.667 -> removed
    logits = torch.stack([good, duplicate, low_iou, unstable, borderline, weak])
    ious = torch.tensor([0.95, 0.93, 0.9, 0.97, 0.91, 0.99])
    box_good, box_dup = masks_to_boxes(torch.stack([good > 0, duplicate > 0]))
    assert box_iou(box_good[None], box_dup[None]).item() == 1.0

    out = select_masks(logits, ious, (h, w), box_nms_thresh=0.9, **FILTERS)
    assert out["indices"].tolist() == [0, 4]  # by decreasing predicted IoU
    assert out["areas"].tolist() == [8 * 9, 5 * 8]  # borderline's row of 0.0 is not > mask_threshold
    assert out["boxes"][0].tolist() == [3, 2, 11, 9]
    assert out["stability_scores"][1].item() == pytest.approx(40 / 48)
    assert out["masks"].shape == (2, h, w)


def test_select_masks_upsamples_to_native_resolution_before_filtering():
    low = torch.full((1, 8, 8), -10.0)
    low[0, :4, :4] = 10.0
    out = select_masks(low, torch.tensor([0.99]), (32, 48), box_nms_thresh=0.9, **FILTERS)
    assert out["masks"].shape == (1, 32, 48)
    expected = _bilinear_matrix(32, 8) @ low[0].double().numpy() @ _bilinear_matrix(48, 8).T
    assert out["areas"].item() == int((expected > 0).sum())
    assert np.array_equal(out["masks"][0].numpy(), expected > 0)
    assert out["boxes"][0].tolist() == [0, 0, 23, 15]


def _bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Interpolation weights of `align_corners=False` bilinear resizing (half-pixel centres, edge clamp)."""
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        src = max((i + 0.5) * in_size / out_size - 0.5, 0.0)
        lo = int(np.floor(src))
        hi = min(lo + 1, in_size - 1)
        weights[i, lo] += 1 - (src - lo)
        weights[i, hi] += src - lo
    return weights


def test_regions_area_filter_and_subtractive_leftover():
    h, w = 40, 50
    masks = np.zeros((3, h, w), dtype=bool)
    masks[0, :20, :30] = True  # 600
    masks[1, 10:30, 10:40] = True  # 600, overlaps mask 0 on 10 x 20 = 200
    masks[2, 35:38, 0:5] = True  # 15 -> below min area
    areas = masks.sum(axis=(1, 2))
    regions = build_regions(masks, areas, h, w, min_area=100)
    assert regions.areas.tolist() == [600, 600, 800]  # subtractive: 2000 - 1200, the overlap subtracted twice
    assert regions.is_leftover.tolist() == [False, False, True]
    union = masks[0] | masks[1]
    assert np.array_equal(regions.masks[-1], ~union)
    assert regions.boxes.tolist()[:2] == [[0, 0, 30, 20], [10, 10, 40, 30]]  # ends exclusive
    exact = build_regions(masks, areas, h, w, min_area=100, leftover_area="exact")
    assert exact.areas[-1] == (~union).sum() == h * w - 1000


def test_regions_none_kept_and_small_leftover():
    h, w = 30, 30
    masks = np.zeros((1, h, w), dtype=bool)
    masks[0, :2, :2] = True
    whole = build_regions(masks, masks.sum(axis=(1, 2)), h, w, min_area=100)
    assert whole.areas.tolist() == [900] and whole.boxes.tolist() == [[0, 0, 30, 30]]
    masks[0, :29, :] = True  # 870 px, leftover 30 < 100 -> no leftover
    regions = build_regions(masks, masks.sum(axis=(1, 2)), h, w, min_area=100)
    assert regions.areas.tolist() == [870] and not regions.is_leftover.any()
    no_leftover = build_regions(masks, np.array([500]), h, w, min_area=100, add_leftover=False)
    assert len(no_leftover.areas) == 1


def test_crops_cut_the_original_pixels():
    image = np.arange(30 * 40 * 3, dtype=np.int64).reshape(30, 40, 3).astype(np.uint8)
    masks = np.zeros((1, 30, 40), dtype=bool)
    masks[0, 5:9, 10:20] = True
    masks[0, 12, 25] = True  # a second component widens the box
    regions = build_regions(masks, np.array([41]), 30, 40, min_area=1, add_leftover=False)
    crop = crop_region(image, regions, 0, "bbox")
    assert np.array_equal(crop, image[5:13, 10:26])
    masked = crop_region(image, regions, 0, "masked")
    assert masked[0, 0].tolist() == image[5, 10].tolist() and masked[-1, 0].tolist() == [0, 0, 0]


def test_sam2_preprocessing_square_and_padded():
    image = np.full((30, 60, 3), 255, dtype=np.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    pixels, valid = preprocess_for_sam2(image, 32, mean, std, "square")
    assert pixels.shape == (3, 32, 32) and valid == (32, 32)
    torch.testing.assert_close(pixels[:, 5, 5], (1 - torch.tensor(mean)) / torch.tensor(std))
    pixels, valid = preprocess_for_sam2(image, 32, mean, std, "longest_side")
    assert valid == (16, 32)
    assert torch.all(pixels[:, 16:] == 0) and torch.all(pixels[:, :16] != 0)
