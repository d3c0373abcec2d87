"""Quality as a loss: restore a degraded photo by raising an IQA model's score with gradients.

A photo (scikit-image's astronaut by default) is blurred and made noisy; then either its pixels (`--optimise
pixels`) or a tiny residual CNN applied to it (`--optimise net`) are optimised with Adam to lower
`hf_iqa.QualityMetric(model, as_loss=True)` plus a fidelity term (L1 to the degraded input, `--fidelity`) that keeps
the result close to the picture instead of drifting towards whatever the model likes. Writes `before_after.png`
(degraded vs optimised, with their scores) and `score_curve.png` into `--output-dir`; existing files are kept
unless `--overwrite`.

By default the model is a tiny random LIQE built in code, so the script runs in well under a minute on a CPU and
shows the mechanics only (a random model's "quality" means nothing). With real weights the scores mean something:

    python examples/quality_reward.py                                   # tiny random model, CPU
    python examples/quality_reward.py --model liqe-koniq --steps 100    # a zoo name, a folder or a Hub id
    python examples/quality_reward.py --model qualiclip --optimise net --device cuda
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import hf_iqa


def tiny_random_liqe() -> torch.nn.Module:
    """A quality-only LIQE with a 1-layer CLIP and random weights (a stand-in for real weights)."""
    from transformers import CLIPConfig

    from hf_iqa.models.liqe import LiqeConfig, LiqeModel

    torch.manual_seed(0)
    clip = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           patch_size=32, hidden_act="quick_gelu"),
        projection_dim=32, logit_scale_init_value=3.0,
    )  # fmt: skip
    model = LiqeModel(LiqeConfig(clip_config=clip, scenes=[], distortions=[]))
    with torch.no_grad():
        model.prompt_text_features.copy_(F.normalize(torch.randn_like(model.prompt_text_features), dim=-1))
    return model


def degraded_photo(path: str | None, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, degraded) as (1, 3, H, W) in [0, 1]: short side `size`, Gaussian blur then noise."""
    if path is None:
        import skimage.data

        picture = skimage.data.astronaut()
    else:
        picture = np.asarray(hf_iqa.load_image(path))
    clean = torch.from_numpy(picture.copy()).permute(2, 0, 1)[None].float() / 255
    scale = size / min(clean.shape[-2:])
    clean = F.interpolate(clean, scale_factor=scale, mode="bilinear", antialias=True).clamp(0, 1)
    radius, sigma = 3, 1.5
    taps = torch.exp(-((torch.arange(-radius, radius + 1.0) / sigma) ** 2) / 2)
    taps = taps / taps.sum()
    blurred = F.conv2d(
        F.pad(clean, [radius] * 4, mode="reflect"),
        (taps[:, None] * taps[None])[None, None].repeat(3, 1, 1, 1),
        groups=3,
    )
    noise = 0.06 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    return clean, (blurred + noise).clamp(0, 1)


class TinyRestorer(torch.nn.Module):
    """Three convolutions predicting a residual; starts as the identity (last layer zero)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(width, 3, 3, padding=1),
        )  # fmt: skip
        torch.nn.init.zeros_(self.body[-1].weight)
        torch.nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.body(x)).clamp(0, 1)


def save_figures(output_dir: Path, degraded, restored, scores: list[float], metric) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pair = output_dir / "before_after.png"
    figure, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for axis, image, title in zip(
        axes, (degraded, restored), (f"degraded: {scores[0]:.3f}", f"optimised: {scores[-1]:.3f}")
    ):
        axis.imshow(image[0].permute(1, 2, 0).detach().cpu().float().numpy())
        axis.set_title(title)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(pair, dpi=100)
    plt.close(figure)

    curve = output_dir / "score_curve.png"
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(range(len(scores)), scores, marker="o", markersize=3)
    axis.set_xlabel("optimisation step")
    low, high = metric.score_range
    axis.set_ylabel(f"score (native range {low:g} to {high:g}, higher is better)")
    axis.set_title(f"{type(metric.model).__name__} score while optimising")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(curve, dpi=100)
    plt.close(figure)
    return pair, curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="zoo name, folder or Hub id (default: a tiny random LIQE, mechanics only)")
    parser.add_argument("--image", help="picture to degrade and restore (default: scikit-image's astronaut)")
    parser.add_argument("--size", type=int, default=256, help="short side of the working picture in pixels")
    parser.add_argument("--optimise", choices=("pixels", "net"), default="pixels")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=None, help="default: 0.01 for pixels, 1e-3 for the net")
    parser.add_argument("--fidelity", type=float, default=0.5, help="weight of L1(result, degraded input)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output-dir", default="quality_reward_output")
    parser.add_argument("--overwrite", action="store_true", help="replace existing figures in --output-dir")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    output_dir = Path(args.output_dir)
    existing = [p for p in (output_dir / "before_after.png", output_dir / "score_curve.png") if p.exists()]
    if existing and not args.overwrite:
        print(f"error: {existing[0]} exists; choose another --output-dir or pass --overwrite", file=sys.stderr)
        return 2
    try:
        _, degraded = degraded_photo(args.image, args.size, args.seed)
    except hf_iqa.ImageLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model = tiny_random_liqe() if args.model is None else args.model
    metric = hf_iqa.QualityMetric(model, as_loss=True, device=args.device)
    degraded = degraded.to(args.device)

    torch.manual_seed(args.seed)
    if args.optimise == "pixels":
        logits = torch.logit(degraded.clamp(1e-3, 1 - 1e-3)).requires_grad_()  # pixels stay in (0, 1)
        parameters, produce = [logits], lambda: torch.sigmoid(logits)
        lr = args.lr or 0.01
    else:
        restorer = TinyRestorer().to(args.device)
        parameters, produce = list(restorer.parameters()), lambda: restorer(degraded)
        lr = args.lr or 1e-3
    optimiser = torch.optim.Adam(parameters, lr=lr)
    scores = []
    for _ in tqdm(range(args.steps), desc="optimising", disable=args.no_progress):
        image = produce()
        score = metric.score(image)  # (1,) native scores; `metric(image)` would give the loss directly
        loss = metric.loss(score) + args.fidelity * (image - degraded).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        scores.append(score.item())
    with torch.no_grad():
        restored = produce()
        scores.append(metric.score(restored).item())

    output_dir.mkdir(parents=True, exist_ok=True)
    pair, curve = save_figures(output_dir, degraded, restored, scores, metric)
    print(f"score {scores[0]:.4f} -> {scores[-1]:.4f} in {args.steps} steps; wrote {pair} and {curve}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
