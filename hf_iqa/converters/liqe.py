"""Convert an original LIQE checkpoint into a Hub-ready hf_iqa folder.

Accepted layouts (detected from the keys):
- official `LIQE.pt` / training checkpoints: a bare OpenAI-CLIP state dict (`visual.conv1.weight`, ...), possibly
  under `model_state_dict`;
- pyiqa `liqe_mix.pt` / `liqe_koniq.pt`: `{'params': {'clip_model.' + key: tensor}}`.

`--variant mix` is the multitask model (495 prompts); `--variant koniq` the KonIQ-only model (5 prompts). The
weights cannot tell the two apart, so the variant is required.

Before saving, the converted model is run next to an independent functional OpenAI-CLIP forward built from the
original checkpoint (`reference_clip.py`) on the same images; prompt embeddings, window embeddings, logits and
scores must agree within `--atol` (1e-5, fp32) or nothing is written.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hf_iqa.openai_clip import build_clip_tokenizer

from .common import (
    ConversionError,
    Stages,
    add_common_arguments,
    assert_parity,
    check_output_dir,
    common_options,
    convert_openai_clip_state_dict,
    infer_vit_clip_config_kwargs,
    load_checkpoint,
    one_line_errors,
    program_name,
    progress_enabled,
    push_if_asked,
    render_model_card,
    save_hub_folder,
    staged_output_dir,
    strip_prefix,
)
from .reference_clip import encode_image_vit, encode_text, openai_tokenize

logger = logging.getLogger(__name__)

VARIANTS = {
    "mix": {"multitask": True, "title": "LIQE (multitask: quality, scene, distortion)", "pyiqa_name": "liqe_mix"},
    "koniq": {"multitask": False, "title": "LIQE (KonIQ-10k, quality only)", "pyiqa_name": "liqe"},
}


PROMPT_CHUNK = 64  # prompts encoded at once (the stage bar advances per chunk)


@dataclass
class ConversionResult:
    output_dir: Path
    files: list[str]
    max_differences: dict[str, float]
    layout: str


def detect_layout(state: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """Return ("pyiqa" | "openai", the bare OpenAI-CLIP state dict)."""
    if any(k.startswith("clip_model.") for k in state):
        return "pyiqa", strip_prefix(state, "clip_model.")
    if "visual.conv1.weight" in state and "token_embedding.weight" in state:
        return "openai", dict(state)
    sample = ", ".join(sorted(state)[:5])
    raise ConversionError(
        "not a LIQE checkpoint: expected OpenAI-CLIP keys (visual.conv1.weight, token_embedding.weight, ...) "
        f"or pyiqa's clip_model.* keys; found {len(state)} keys such as {sample}"
    )


def build_model(openai_state: dict[str, torch.Tensor], variant: str, protocol: str):
    """LiqeModel with the converted CLIP weights (prompt embeddings not yet computed)."""
    from transformers import CLIPConfig

    from hf_iqa.models.liqe import LiqeConfig, LiqeModel

    if "visual.proj" not in openai_state:
        raise ConversionError("LIQE needs a ViT CLIP (visual.proj missing; ResNet CLIP checkpoints are not LIQE)")
    clip_kwargs = infer_vit_clip_config_kwargs(openai_state)
    clip_kwargs["logit_scale_init_value"] = float(openai_state["logit_scale"].float())
    multitask = VARIANTS[variant]["multitask"]
    config = LiqeConfig(
        clip_config=CLIPConfig(**clip_kwargs),
        scenes=None if multitask else [],
        distortions=None if multitask else [],
        protocol=protocol,
    )
    model = LiqeModel(config)
    converted = convert_openai_clip_state_dict(openai_state)
    result = model.clip.load_state_dict(converted, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise ConversionError(f"key mismatch: missing {missing[:8]}, unexpected {result.unexpected_keys[:8]}")
    return model.eval()


def parity_images() -> list[Image.Image]:
    """Deterministic test pictures of the sizes that exercise both strides, resizing and padding."""
    rng = np.random.default_rng(20230314)
    images = []
    for width, height in ((512, 384), (384, 512), (1024, 768), (250, 230)):
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack([np.sin(xx / 9.0) * 90, np.cos((xx + yy) / 17.0) * 90, np.sin(yy / 6.0) * 60], -1) + 127
        images.append(Image.fromarray(np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)))
    return images


def reference_prompts(quality: list[str], scenes: list[str], distortions: list[str], template: str) -> list[str]:
    """The prompt list as the original code builds it (quality outermost), written independently of LiqeConfig."""
    if not scenes:
        return [template.format(quality=q) for q in quality]
    return [
        template.format(quality=q, scene=s, distortion=d)
        for q, s, d in itertools.product(quality, scenes, distortions)
    ]


def reference_scores(
    openai_state: dict[str, torch.Tensor],
    windows: torch.Tensor,
    mask: torch.Tensor,
    text: torch.Tensor,
    levels: int,
    step=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LIQE's head on the reference embeddings: (window embeds, logits, scores). `step()` after each image."""
    image_embeds, logits, scores = [], [], []
    text = text / text.norm(dim=-1, keepdim=True)
    scale = openai_state["logit_scale"].float().exp()
    for image_windows, image_mask in zip(windows, mask):
        kept = image_windows[image_mask.bool()]
        embeds = encode_image_vit(openai_state, kept)
        embeds = embeds / embeds.norm(dim=-1, keepdim=True)
        image_logits = (scale * embeds @ text.t()).mean(dim=0)
        probs = image_logits.softmax(dim=-1).reshape(levels, -1).sum(dim=-1)
        image_embeds.append(embeds)
        logits.append(image_logits)
        scores.append((probs * torch.arange(1, levels + 1)).sum())
        if step is not None:
            step()
    return torch.cat(image_embeds), torch.stack(logits), torch.stack(scores)


@torch.no_grad()
def check_parity(model, processor, openai_state, tokenizer, atol: float, step=None) -> dict[str, float]:
    """Compare the converted model with the functional reference; raise ParityError above `atol`. `step` is
    called after each chunk of prompts and each image (progress)."""
    step = step or (lambda: None)
    config = model.config
    prompts = reference_prompts(config.quality_levels, config.scenes, config.distortions, config.prompt_template)
    if prompts != config.prompts:
        raise ConversionError("prompt order of LiqeConfig differs from the original (quality, scene, distortion)")
    reference_chunks = []
    for start in range(0, len(prompts), PROMPT_CHUNK):
        reference_chunks.append(
            encode_text(openai_state, openai_tokenize(tokenizer, prompts[start : start + PROMPT_CHUNK]))
        )
        step()
    reference_text = torch.cat(reference_chunks)
    differences = {
        "prompt_text_features": assert_parity(
            "prompt_text_features",
            model.prompt_text_features,
            reference_text / reference_text.norm(dim=-1, keepdim=True),
            atol,
        )
    }
    inputs = processor(parity_images(), return_tensors="pt")
    outputs = model(**inputs)
    ref_embeds, ref_logits, ref_scores = reference_scores(
        openai_state, inputs["pixel_values"], inputs["patch_mask"], reference_text, len(config.quality_levels), step
    )
    ours = model.get_image_features(inputs["pixel_values"], inputs["patch_mask"])[inputs["patch_mask"].bool()]
    differences["image_embeds"] = assert_parity("window embeddings", ours, ref_embeds, atol)
    # logits are scaled by exp(logit_scale) = 100: compare them relative to that scale
    scale = float(openai_state["logit_scale"].float().exp())
    differences["logits"] = assert_parity("logits / logit scale", outputs.logits / scale, ref_logits / scale, atol)
    differences["scores"] = assert_parity("scores", outputs.scores, ref_scores, atol)
    return differences


def convert(
    checkpoint: str | Path,
    variant: str,
    output_dir: str | Path,
    protocol: str = "official",
    overwrite: bool = False,
    atol: float = 1e-5,
    progress: bool | None = None,
) -> ConversionResult:
    """Original LIQE checkpoint -> verified Hub-ready folder. Returns where it went and the parity figures.

    `output_dir` must be new, empty or (with `overwrite`) an earlier converter output: only the converter's own
    files are replaced. `progress` (default: on unless HF_IQA_NO_PROGRESS is set) shows the stages on stderr."""
    from hf_iqa.models.liqe import LiqeImageProcessor

    if variant not in VARIANTS:
        raise ConversionError(f"unknown LIQE variant {variant!r}; choose from {sorted(VARIANTS)}")
    check_output_dir(output_dir, overwrite)  # before the slow work
    with Stages(f"convert liqe ({variant})", 6, progress_enabled(progress)) as stages:
        stages.stage("loading the checkpoint")
        layout, openai_state = detect_layout(load_checkpoint(checkpoint))
        logger.info("%s: %s layout, %d tensors", checkpoint, layout, len(openai_state))
        stages.stage("building the model")
        model = build_model(openai_state, variant, protocol)
        processor = LiqeImageProcessor(protocol=protocol)
        tokenizer = build_clip_tokenizer()
        chunks = -(-model.config.num_prompts // PROMPT_CHUNK)
        stages.stage(f"prompt embeddings ({model.config.num_prompts} prompts)", chunks)
        # the tokenizer ticks once per chunk
        model.compute_prompt_text_features(stages.ticking(tokenizer), batch_size=PROMPT_CHUNK)
        stages.stage("parity check against the original architecture", chunks + len(parity_images()))
        differences = check_parity(model, processor, openai_state, tokenizer, atol, step=stages.step)

        stages.stage("saving")
        card = render_liqe_card(variant, protocol, Path(checkpoint).name, layout, model.config)
        with staged_output_dir(output_dir, overwrite) as staging:
            files = save_hub_folder(staging, model, processor, tokenizer, card)
            # The saved folder must score exactly as the verified in-memory model.
            stages.stage("reloading the saved folder and checking it")
            from transformers import AutoModel

            reloaded = AutoModel.from_pretrained(str(staging)).eval()
            inputs = processor(parity_images()[:2], return_tensors="pt")
            with torch.no_grad():
                assert_parity("reloaded scores", reloaded(**inputs).scores, model(**inputs).scores, 0.0)
    return ConversionResult(Path(output_dir), files, differences, layout)


def render_liqe_card(variant: str, protocol: str, source_file: str, layout: str, config) -> str:
    info = VARIANTS[variant]
    reported = (
        "| AGIQA-3K | 0.7212 |\n| AGIQA-1K | 0.5785 |\n| SJTU-H3D | 0.6716 |\n| AIGCIQA2023 | 0.7435 |"
        if variant == "mix"
        else "| — | The authors publish no per-dataset figures for this checkpoint. |"
    )
    source = {"source_name": "LIQE official README (authors)", "source_url": "https://github.com/zwx8981/LIQE"}
    eval_results = [
        {"dataset_name": name, "dataset_type": key, "metric_type": "spearmanr", "metric_name": "SRCC (reported)",
         "value": value, **source}
        for name, key, value in (("AGIQA-3K", "agiqa3k", 0.7212), ("AGIQA-1K", "agiqa1k", 0.5785),
                                 ("SJTU-H3D", "sjtu-h3d", 0.6716), ("AIGCIQA2023", "aigciqa2023", 0.7435))
    ] if variant == "mix" else None  # fmt: skip
    return render_model_card(
        "liqe",
        eval_results=eval_results,
        title=info["title"],
        variant=variant,
        pyiqa_name=info["pyiqa_name"],
        protocol=protocol,
        num_prompts=config.num_prompts,
        source_file=source_file,
        layout=layout,
        reported_table=reported,
        license="cc-by-nc-sa-4.0" if layout == "pyiqa" else "other",
        license_name="cc-by-nc-sa-4.0" if layout == "pyiqa" else "unstated-by-authors",
        license_link="https://huggingface.co/chaofengc/IQA-PyTorch-Weights"
        if layout == "pyiqa"
        else "https://github.com/zwx8981/LIQE",
        extras="`level_probs`, `scene`/`scene_probs`, `distortion`/`distortion_probs`"
        if variant == "mix"
        else "`level_probs`",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=program_name("liqe"), description="Convert an original LIQE checkpoint into a Hub-ready hf_iqa folder."
    )
    parser.add_argument(
        "--checkpoint", required=True, help="LIQE.pt (official) or liqe_mix.pt / liqe_koniq.pt (pyiqa)"
    )
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS), help="mix: 495 prompts; koniq: 5")
    parser.add_argument(
        "--output-dir", required=True, help="folder to write: new, empty, or an earlier conversion with --overwrite"
    )
    parser.add_argument("--protocol", default="official", choices=["official", "pyiqa"], help="processor default")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with one_line_errors(program_name("liqe")):
        result = convert(args.checkpoint, args.variant, args.output_dir, args.protocol, **common_options(args))
    figures = ", ".join(f"{k} {v:.2g}" for k, v in result.max_differences.items())
    print(f"parity vs the original architecture (max |diff|): {figures}")
    print(f"wrote {result.output_dir} ({', '.join(result.files)})")
    push_if_asked(args, result.output_dir, program_name("liqe"))  # only reached when the parity check passed
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
