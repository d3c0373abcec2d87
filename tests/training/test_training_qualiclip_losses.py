"""Model-agnostic parts of QualiCLIP's self-supervised recipe: overlapping crops, degraded crop pairs, the
L_pos / L_neg / L_cons margin losses; and a tiny image encoder trained with them through the shared loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_iqa.training import common
from hf_iqa.training.qualiclip_data import DegradedCropPairs, overlapping_crop_boxes
from hf_iqa.training.qualiclip_losses import (
    QualiClipLossConfig,
    prompt_similarities,
    qualiclip_losses,
    qualiclip_step_loss,
)


def test_overlapping_crops_stay_inside_and_overlap_enough():
    for seed in range(200):
        rng = np.random.default_rng(seed)
        a, b = overlapping_crop_boxes(300, 240, 96, rng, min_overlap=0.5)
        for left, top, right, bottom in (a, b):
            assert 0 <= left and 0 <= top and right <= 300 and bottom <= 240 and right - left == bottom - top == 96
        width = min(a[2], b[2]) - max(a[0], b[0])
        height = min(a[3], b[3]) - max(a[1], b[1])
        assert width > 0 and height > 0 and width * height >= 0.5 * 96 * 96
    with pytest.raises(ValueError, match="smaller than the crop size"):
        overlapping_crop_boxes(50, 300, 96, np.random.default_rng(0))


def test_losses_on_hand_made_similarities():
    margin = 0.1
    config = QualiClipLossConfig(margin=margin, consistency_margin=0.0)
    ordered_pos = torch.tensor([0.9, 0.7, 0.5]).expand(1, 2, 3)  # decreasing by 0.2 >= margin
    ordered_neg = torch.tensor([0.1, 0.3, 0.5]).expand(1, 2, 3)  # increasing by 0.2
    losses = qualiclip_losses(ordered_pos, ordered_neg, config)
    assert all(float(v) == 0 for v in losses.values())

    # reversed positives: pairs (i<j) differ by 0.2 and 0.4 the wrong way -> (0.2+0.1, 0.4+0.1, 0.2+0.1) / 3
    reversed_pos = torch.tensor([0.5, 0.7, 0.9]).expand(1, 2, 3)
    losses = qualiclip_losses(reversed_pos, ordered_neg, config)
    assert float(losses["l_pos"]) == pytest.approx((0.3 + 0.5 + 0.3) / 3)
    assert float(losses["l_neg"]) == 0 and float(losses["l_cons"]) == 0

    # equal neighbours violate only by the margin; different crops at the same level cost |gap|
    flat = torch.full((1, 2, 3), 0.5)
    assert float(qualiclip_losses(flat, flat, config)["l_neg"]) == pytest.approx(margin)
    crops_differ = torch.stack([torch.tensor([0.9, 0.7, 0.5]), torch.tensor([0.8, 0.6, 0.4])]).unsqueeze(0)
    losses = qualiclip_losses(crops_differ, ordered_neg, config)
    assert float(losses["l_cons"]) == pytest.approx(0.1 / 2)  # 0.1 gap on the positive prompt, 0 on the negative
    assert float(losses["loss"]) == pytest.approx(float(losses["l_pos"] + losses["l_neg"] + losses["l_cons"]))

    with pytest.raises(ValueError, match="batch, 2 crops, levels"):
        qualiclip_losses(torch.zeros(2, 3), torch.zeros(2, 3))


def test_gradients_push_similarities_in_the_right_direction():
    sim_pos = torch.tensor([0.5, 0.6, 0.7]).expand(1, 2, 3).clone().requires_grad_(True)
    sim_neg = torch.tensor([0.7, 0.6, 0.5]).expand(1, 2, 3).clone().requires_grad_(True)
    qualiclip_losses(sim_pos, sim_neg)["loss"].backward()
    # descending the gradient raises s+ of the mildest level and lowers s+ of the strongest; the opposite for s-
    assert sim_pos.grad[0, 0, 0] < 0 < sim_pos.grad[0, 0, 2]
    assert sim_neg.grad[0, 0, 0] > 0 > sim_neg.grad[0, 0, 2]


def test_step_loss_matches_explicit_cosine_similarities():
    torch.manual_seed(0)
    features, prompts = torch.randn(2 * 2 * 5, 16), torch.randn(2, 16)
    losses = qualiclip_step_loss(features, prompts, (2, 2, 5))
    cosine = torch.nn.functional.cosine_similarity(features[:, None], prompts[None], dim=-1).reshape(2, 2, 5, 2)
    expected = qualiclip_losses(cosine[..., 0], cosine[..., 1])
    for key in expected:
        torch.testing.assert_close(losses[key], expected[key])
    assert prompt_similarities(features, prompts).shape == (20, 2)


def test_degraded_crop_pairs_are_deterministic_and_get_worse_with_level(make_image):
    images = [make_image(80, 60, seed=s) for s in range(3)] + [make_image(20, 30, seed=9)]  # last one is upscaled
    dataset = DegradedCropPairs(images, crop_size=48, seed=1, max_distortions=2)
    item = dataset[0]
    assert item["pixel_values"].shape == (2, 5, 3, 48, 48) and item["pixel_values"].dtype == torch.float32
    assert item["degradations"].shape == (2,) and int(item["degradations"][0]) >= 0
    torch.testing.assert_close(dataset[0]["pixel_values"], item["pixel_values"], rtol=0, atol=0)
    assert dataset[3]["pixel_values"].shape == (2, 5, 3, 48, 48)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0]["pixel_values"], item["pixel_values"])  # new crops/distortions each epoch

    # each crop drifts further from its mildest version as the level rises
    pixel_values = DegradedCropPairs(images, crop_size=48, seed=2)[1]["pixel_values"]
    distances = (pixel_values - pixel_values[:, :1]).abs().mean(dim=(2, 3, 4))
    assert torch.all(distances[:, 1:] > 0) and torch.all(distances[:, -1] > distances[:, 1])


class TinyImageEncoder(torch.nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2),
            torch.nn.GELU(),
            torch.nn.Conv2d(8, 16, 3, stride=2),
            torch.nn.GELU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(16, dim),
        )

    def forward(self, pixel_values):
        return self.net(pixel_values)


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_tiny_encoder_trained_with_the_losses_through_the_shared_loop(tmp_path, make_image):
    from safetensors.torch import load_file

    prompts = torch.nn.functional.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    images = [make_image(64, 64, seed=s) for s in range(8)]
    dataset = DegradedCropPairs(images, crop_size=32, seed=0, groups=["blur", "noise"])

    def compute_loss(model, batch):
        pixel_values = batch["pixel_values"]
        losses = qualiclip_step_loss(model(pixel_values.flatten(0, 2)), prompts, tuple(pixel_values.shape[:3]))
        return losses["loss"], {k: v for k, v in losses.items() if k != "loss"}

    def predict(model, batch):  # quality score = s+ - s-, target = -level
        pixel_values = batch["pixel_values"][:, 0]  # first crop, (B, L, 3, H, W)
        sims = prompt_similarities(model(pixel_values.flatten(0, 1)), prompts)
        levels = torch.arange(1, pixel_values.shape[1] + 1, dtype=torch.float32).repeat(pixel_values.shape[0])
        return sims[:, 0] - sims[:, 1], -levels

    torch.manual_seed(0)
    untrained = TinyImageEncoder()
    fixed_batch = torch.utils.data.default_collate([dataset[i] for i in range(8)])
    with torch.no_grad():
        loss_before = float(compute_loss(untrained, fixed_batch)[0])

    def build(config, accelerator):
        torch.manual_seed(0)
        return common.TrainingTask(
            model=TinyImageEncoder(),
            train_dataset=dataset,
            eval_dataset=DegradedCropPairs(images[:4], crop_size=32, seed=99, groups=["blur", "noise"]),
            compute_loss=compute_loss,
            predict=predict,
        )

    config = common.TrainingConfig(
        output_dir=str(tmp_path / "qc"), max_steps=24, train_batch_size=4, learning_rate=3e-2, logging_steps=4,
        eval_steps=24, checkpointing_steps=0, seed=0,
    )  # fmt: skip
    result = common.train(config, build)
    assert {"l_pos", "l_neg", "l_cons"} <= set(result.history[0])
    trained = TinyImageEncoder()
    trained.load_state_dict(load_file(str(tmp_path / "qc" / "last" / "model.safetensors")))  # plain-module folder
    with torch.no_grad():
        loss_after = float(compute_loss(trained, fixed_batch)[0])
    assert loss_after < 0.9 * loss_before, (loss_before, loss_after)
    assert result.best_metric is not None and result.best_metric > 0.5  # SRCC with -level on held-out crops
