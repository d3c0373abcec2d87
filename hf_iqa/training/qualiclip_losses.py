"""The losses of QualiCLIP's self-supervised training (Agnolucci et al., arXiv 2403.11176): three margin ranking
losses on the cosine similarities between the image features of degraded crop pairs (`qualiclip_data.py`) and the
fixed antonym prompt features ("Good photo." / "Bad photo.").

Known from the paper and its repository (qualiclip.md §8.1): two random overlapping crops per pristine image, both
degraded with the same synthetic distortion at L increasing levels (ARNIQA's degradation model), only the image
encoder trained, `L_pos` (similarity to the positive prompt decreases with the level), `L_neg` (similarity to the
negative prompt increases with the level), `L_cons` (equally degraded crops have equal similarities).

Ours where the released material is silent (the training code was not published; confirm against the paper before
quoting numbers): all-pairs (i < j) ranking instead of only adjacent levels, the margin defaults (0.05 ranking,
0.0 consistency), equal loss weights, means instead of sums; the crop choices are listed in `qualiclip_data.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def prompt_similarities(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (N, P) between N image features and P prompt features (both (·, D))."""
    image_features = torch.nn.functional.normalize(image_features.float(), dim=-1)
    text_features = torch.nn.functional.normalize(text_features.float(), dim=-1)
    return image_features @ text_features.t()


@dataclass
class QualiClipLossConfig:
    """Margins and weights of the three losses; all values are ours (see the module docstring)."""

    margin: float = 0.05
    consistency_margin: float = 0.0
    weight_pos: float = 1.0
    weight_neg: float = 1.0
    weight_cons: float = 1.0


def _pairwise_order_violation(similarity: torch.Tensor, margin: float) -> torch.Tensor:
    """mean over i < j (levels) of max(0, s_j - s_i + margin): zero when s decreases by >= margin per level pair."""
    num_levels = similarity.shape[-1]
    i, j = torch.triu_indices(num_levels, num_levels, offset=1, device=similarity.device)
    return torch.relu(similarity[..., j] - similarity[..., i] + margin).mean()


def qualiclip_losses(
    sim_pos: torch.Tensor, sim_neg: torch.Tensor, config: QualiClipLossConfig | None = None
) -> dict[str, torch.Tensor]:
    """The ranking and consistency losses on similarities of shape (B, 2 crops, L levels), level 1 first.

    l_pos = mean_{i<j} max(0, s⁺_j - s⁺_i + m)        (less degraded -> closer to the positive prompt)
    l_neg = mean_{i<j} max(0, s⁻_i - s⁻_j + m)        (more degraded -> closer to the negative prompt)
    l_cons = mean max(0, |s_crop1 - s_crop2| - m_cons)  over levels and both prompts
    loss = w_pos·l_pos + w_neg·l_neg + w_cons·l_cons
    """
    config = config or QualiClipLossConfig()
    if sim_pos.shape != sim_neg.shape or sim_pos.ndim != 3 or sim_pos.shape[1] != 2:
        raise ValueError(
            f"similarities must both have shape (batch, 2 crops, levels), got {tuple(sim_pos.shape)} and {tuple(sim_neg.shape)}"
        )
    if sim_pos.shape[-1] < 2:
        raise ValueError("the ranking losses need at least 2 degradation levels")
    l_pos = _pairwise_order_violation(sim_pos, config.margin)
    l_neg = _pairwise_order_violation(-sim_neg, config.margin)
    gaps = torch.cat([(sim_pos[:, 0] - sim_pos[:, 1]).abs(), (sim_neg[:, 0] - sim_neg[:, 1]).abs()])
    l_cons = torch.relu(gaps - config.consistency_margin).mean()
    loss = config.weight_pos * l_pos + config.weight_neg * l_neg + config.weight_cons * l_cons
    return {"loss": loss, "l_pos": l_pos, "l_neg": l_neg, "l_cons": l_cons}


def qualiclip_step_loss(
    image_features: torch.Tensor,
    prompt_features: torch.Tensor,
    batch_shape: tuple[int, int, int],
    config: QualiClipLossConfig | None = None,
) -> dict[str, torch.Tensor]:
    """From image features of the flattened (B·2·L, D) crops and the (2, D) [positive, negative] prompt features to
    the losses; `batch_shape` = (B, 2, L) as in `DegradedCropPairs`' pixel_values."""
    if prompt_features.shape[0] != 2:
        raise ValueError(f"prompt_features must hold [positive, negative], got shape {tuple(prompt_features.shape)}")
    similarities = prompt_similarities(image_features, prompt_features).reshape(*batch_shape, 2)
    return qualiclip_losses(similarities[..., 0], similarities[..., 1], config)
