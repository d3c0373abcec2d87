"""hf_iqa's Dog-IQA regions, aggregation and score reading against an independent restatement of the released code
(sjtuzzq/Dog-IQA `get_mask.py`, `eval.py`), written from reading it, on hundreds of random cases."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from hf_iqa.models.dog_iqa import aggregate_scores
from hf_iqa.models.dog_iqa.modeling_dog_iqa import DogIqaModel
from hf_iqa.models.dog_iqa.segmentation_dog_iqa import build_regions, crop_region


def released_regions(masks, areas, height, width, min_area):
    """Keep each mask whose area reaches min_area, in order; none kept: the whole image with area H*W. Otherwise the
    leftover area is H*W minus the kept areas (overlaps subtracted twice) and, when it reaches min_area, the pixels
    outside every kept mask form one more region carrying that area. A region's crop is the box spanning all its
    pixels (last row/column included)."""
    kept = [(m, float(a)) for m, a in zip(masks, areas) if a >= min_area]
    if not kept:
        return [(np.ones((height, width), bool), float(height * width))]
    remain = height * width - sum(a for _, a in kept)
    if remain >= min_area:
        outside = np.ones((height, width), bool)
        for m, _ in kept:
            outside &= ~m
        kept.append((outside, float(remain)))  # even with no pixel left (then its crop spans the whole image)
    return kept


def box_of(mask):
    ys, xs = np.nonzero(mask)
    if ys.size == 0:  # no connected component: the released slices are [None:None], the whole image
        return 0, 0, mask.shape[1], mask.shape[0]
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def random_masks(rng, height, width):
    masks = []
    for _ in range(rng.integers(0, 6)):
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        y1, x1 = rng.integers(y0 + 1, height + 1), rng.integers(x0 + 1, width + 1)
        mask = np.zeros((height, width), bool)
        mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < rng.uniform(0.3, 1.0)
        if mask.any():
            masks.append(mask)
    return masks


def test_regions_areas_leftover_fallback_and_crops_match_the_released_logic():
    rng = np.random.default_rng(0)
    seen = {"fallback": 0, "leftover": 0}
    for _ in range(400):
        height, width = int(rng.integers(8, 60)), int(rng.integers(8, 60))
        masks = random_masks(rng, height, width)
        areas = np.array([m.sum() for m in masks], dtype=np.float64)
        min_area = int(rng.integers(1, height * width // 3 + 2))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        stack = np.stack(masks) if masks else np.zeros((0, height, width), bool)
        ours = build_regions(stack, areas, height, width, min_area)
        theirs = released_regions(masks, areas, height, width, min_area)
        assert len(ours.areas) == len(theirs)
        seen["fallback"] += len(theirs) == 1 and theirs[0][0].all()
        seen["leftover"] += bool(ours.is_leftover[-1]) and len(theirs) > 1
        for r, (mask, area) in enumerate(theirs):
            assert ours.areas[r] == area
            assert np.array_equal(ours.masks[r], mask)
            x0, y0, x1, y1 = box_of(mask)
            assert tuple(ours.boxes[r]) == (x0, y0, x1, y1)
            assert np.array_equal(crop_region(image, ours, r, "bbox"), image[y0:y1, x0:x1])
            masked = np.where(mask[:, :, None], image, 0)[y0:y1, x0:x1]
            assert np.array_equal(crop_region(image, ours, r, "masked"), masked)
    assert seen["fallback"] > 20 and seen["leftover"] > 20  # both branches exercised


def test_every_aggregation_matches_the_released_formulas():
    rng = np.random.default_rng(1)
    for _ in range(300):
        batch, width = int(rng.integers(1, 5)), int(rng.integers(1, 8))
        counts = rng.integers(1, width + 1, batch)
        g = rng.integers(1, 8, batch).astype(float)
        s = rng.integers(1, 8, (batch, width)).astype(float)
        a = rng.uniform(1, 5000, (batch, width))
        lam, gw = float(rng.uniform(0, 0.3)), float(rng.uniform(0, 1))
        pad = np.arange(width)[None] >= counts[:, None]
        s_t = torch.tensor(np.where(pad, np.nan, s))
        args = (torch.tensor(g), s_t, torch.tensor(np.where(pad, 0, a)), torch.tensor(counts))
        for i in range(batch):
            c = int(counts[i])
            s_aw = sum(a[i, k] * s[i, k] for k in range(c)) / sum(a[i, k] for k in range(c))
            expected = {
                "released_code": s_aw + lam * c + gw * g[i],  # eval.py: s_aw + lambda1 * c + lambda2 * s_global
                "paper": (g[i] + s_aw + lam * c) / 2,
                "global": g[i],
                "local": s_aw,
            }
            for name, value in expected.items():
                got = aggregate_scores(*args, aggregation=name, seg_lambda=lam, global_weight=gw)[i]
                assert abs(float(got) - value) < 1e-4 * max(1.0, abs(value)), name


def test_score_is_the_greedy_token_parsed_as_an_integer_else_one():
    fake = SimpleNamespace(config=SimpleNamespace(unparsable_score=1.0))
    rng = np.random.default_rng(2)
    alphabet = list("0123456789 -+.aZ\n") + ["<|im_end|>", "Good", "٣"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet, int(rng.integers(0, 4))))
        try:
            expected = float(int(text))  # the released reading: int(decoded text), any failure -> 1
        except ValueError:
            expected = 1.0
        assert DogIqaModel.view_score(fake, {"greedy_text": text}, "generate") == expected
