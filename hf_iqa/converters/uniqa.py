"""Convert the released UniQA checkpoint (`UniQA_weight.pt`) into a Hub-ready hf_iqa folder.

The checkpoint is a flat OpenAI-format CLIP state dict (image + text towers). Sources disagree on whether it is a
ViT-B/16 or an RN50, so the architecture is read from the tensors, with the rules of OpenAI's `build_model`:
ViT iff `visual.proj` exists (width, patch, layers, grid from `visual.conv1` / the position table), ResNet iff
`visual.attnpool.*` exists (blocks per stage, width, image size from the attention-pool table). Anything else is
refused.

`--fp16-roundtrip` (the default) reproduces upstream's loader, which runs OpenAI's `convert_weights` (fp16) *before*
`load_state_dict` and then `.float()`: every Conv/Linear weight and bias, the attention `in_proj_*`/`out_proj.*`,
`visual.proj` and `text_projection` pass through fp16 (LayerNorm/BatchNorm, embeddings and `logit_scale` do not).
Without it an fp32 file gives features ~3e-4 (relative) away from upstream's.

The released weights hold no adapter; the converted model is zero-shot (fixed levels 0.2 ... 1.0) unless a trained
head is given (`--quality-head` / `--aesthetics-head`: pyiqa `net_g_*.pth` or an hf_iqa head file with
`adapter.fc.0.weight`, `adapter.fc.2.weight`, `score_level`).

Before saving, the converted model is run next to independent functional forwards built on the original keys
(`reference_clip.py` for ViT and text, `reference_resnet.py` for ResNet) on the same crops; text features, image
embeddings and every head's scores must agree within `--atol` (1e-5, fp32) or nothing is written.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import warnings
from collections.abc import Mapping
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
    convert_resnet_state_dict,
    infer_text_config_kwargs,
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
from .reference_resnet import encode_image_resnet

logger = logging.getLogger(__name__)

TASKS = ("quality", "aesthetics")
# The tensors OpenAI's `convert_weights` casts to fp16: Conv/Linear weights and biases (ResNet convolutions, the ViT
# patch embedding, attention-pool projections, MLPs, attention out_proj), MultiheadAttention in_proj_*, and the
# `proj` / `text_projection` attributes.
FP16_ROUNDED = re.compile(
    r"(?:conv\d\.weight|downsample\.0\.weight|attnpool\.[qkvc]_proj\.(?:weight|bias)"
    r"|attn\.in_proj_(?:weight|bias)|attn\.out_proj\.(?:weight|bias)|mlp\.c_(?:fc|proj)\.(?:weight|bias))$"
    r"|^visual\.proj$|^text_projection$"
)


@dataclass
class ConversionResult:
    output_dir: Path
    files: list[str]
    max_differences: dict[str, float]
    backbone: str


# ----------------------------------------------------------------------------------------------------------------
# Reading the checkpoint
# ----------------------------------------------------------------------------------------------------------------
def openai_state_dict(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The bare OpenAI-CLIP state dict (a `clip_model.` prefix, as in pyiqa wrappers, is removed)."""
    if any(key.startswith("clip_model.") for key in state):
        state = strip_prefix(state, "clip_model.")
    required = ("visual.conv1.weight", "token_embedding.weight", "text_projection", "logit_scale")
    missing = [key for key in required if key not in state]
    if missing:
        sample = ", ".join(sorted(state)[:5])
        raise ConversionError(
            f"{source}: not an OpenAI-format CLIP checkpoint (missing {', '.join(missing)}); found {len(state)} keys "
            f"such as {sample}"
        )
    return dict(state)


def detect_backbone(state: Mapping[str, torch.Tensor]) -> str:
    """Return "vit" or "resnet", as OpenAI's `build_model` decides; anything else raises."""
    if "visual.proj" in state:
        return "vit"
    if any(key.startswith("visual.attnpool.") for key in state):
        return "resnet"
    raise ConversionError("unknown image tower: neither visual.proj (ViT) nor visual.attnpool.* (ResNet) is present")


def fp16_roundtrip(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Round exactly the tensors OpenAI's `convert_weights` casts through fp16 (idempotent for fp16 files)."""
    rounded, keys = {}, []
    for key, tensor in state.items():
        if FP16_ROUNDED.search(key) and tensor.is_floating_point():
            rounded[key] = tensor.half().float()
            keys.append(key)
        else:
            rounded[key] = tensor
    return rounded, keys


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len({key[len(prefix) :].split(".")[0] for key in state if key.startswith(prefix)})


def infer_resnet_config_kwargs(state: Mapping[str, torch.Tensor]) -> dict:
    """`ClipResNetConfig` kwargs of an OpenAI ModifiedResNet tower (read from tensor shapes)."""
    width = int(state["visual.layer1.0.conv1.weight"].shape[0])
    tokens = int(state["visual.attnpool.positional_embedding"].shape[0])
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        raise ConversionError(f"visual.attnpool.positional_embedding has {tokens} rows, not a square grid + 1")
    return {
        "layers": [_count_blocks(state, f"visual.layer{stage}.") for stage in range(1, 5)],
        "width": width,
        "num_attention_heads": width * 32 // 64,
        "image_size": 32 * grid,
        "projection_dim": int(state["visual.attnpool.c_proj.weight"].shape[0]),
        # upstream's `pos_embedding=True`: 1-D resize of the table, identity at the native size
        "position_embedding_mode": "legacy_1d",
    }


def convert_resnet_vision_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI `visual.*` ResNet keys -> `vision_model.*` (the key map shared with QualiCLIP)."""
    return {"vision_model." + key: tensor.contiguous() for key, tensor in convert_resnet_state_dict(state).items()}


def build_model(state: Mapping[str, torch.Tensor], backbone: str, task: str = "quality"):
    """UniQaModel with the converted CLIP weights (prompt features not yet computed)."""
    from transformers import CLIPConfig

    from hf_iqa.models.uniqa import UniQaConfig, UniQaModel

    logit_scale = float(state["logit_scale"].float())
    if backbone == "vit":
        clip_kwargs = infer_vit_clip_config_kwargs(state)
        config = UniQaConfig(
            backbone_type="vit", clip_config=CLIPConfig(**clip_kwargs, logit_scale_init_value=logit_scale), task=task
        )
        converted = convert_openai_clip_state_dict(state)
    else:
        text_kwargs = infer_text_config_kwargs(state)
        config = UniQaConfig(
            backbone_type="resnet",
            clip_config=CLIPConfig(
                text_config=text_kwargs,
                projection_dim=text_kwargs["projection_dim"],
                logit_scale_init_value=logit_scale,
            ),
            resnet_config=infer_resnet_config_kwargs(state),
            task=task,
        )
        converted = convert_resnet_vision_keys(state)
        converted.update(convert_openai_clip_state_dict(state, include_vision=False))
    model = UniQaModel(config)
    result = model.clip.load_state_dict(converted, strict=False)
    missing = [key for key in result.missing_keys if not key.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise ConversionError(f"key mismatch: missing {missing[:8]}, unexpected {result.unexpected_keys[:8]}")
    return model.eval()


def describe_backbone(config) -> str:
    """A short human-readable architecture name, for the log and the model card."""
    if config.backbone_type == "vit":
        vision = config.clip_config.vision_config
        positions = "" if config.use_position_embedding else ", no position embedding (upstream pos_embedding=False)"
        return (
            f"ViT (width {vision.hidden_size}, {vision.num_hidden_layers} layers, patch {vision.patch_size}, "
            f"{vision.image_size} px, embed {config.projection_dim}{positions})"
        )
    resnet = config.resnet_config
    return (
        f"ResNet (blocks {resnet.layers}, width {resnet.width}, {resnet.image_size} px, embed {config.projection_dim})"
    )


# ----------------------------------------------------------------------------------------------------------------
# Parity against the independent reference
# ----------------------------------------------------------------------------------------------------------------
def parity_images(crop_size: int) -> list[Image.Image]:
    """Deterministic textured pictures: landscape, portrait, and one smaller than a crop."""
    rng = np.random.default_rng(20240603)
    sizes = [
        (crop_size * 2 + 19, crop_size + 37),
        (crop_size + 5, crop_size * 2),
        (crop_size * 3 // 2, crop_size * 3 // 4),
    ]
    images = []
    for width, height in sizes:
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack([np.sin(xx / 7.0) * 90, np.cos((xx + yy) / 13.0) * 90, np.sin(yy / 5.0) * 60], -1) + 127
        images.append(Image.fromarray(np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)))
    return images


def reference_head_scores(
    image_embeds: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    levels: torch.Tensor,
    adapter: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """Upstream's heads, written out on raw tensors: (N, D) crop embeddings -> (N,) crop scores. With G groups of
    prompts (`UniQA_Adapter_Patchtest_PromptEs`), one softmax per group and the mean of the group scores."""
    features = image_embeds.float()
    if adapter is not None:
        hidden = torch.relu(features @ adapter[0].float().t())
        features = features + torch.relu(hidden @ adapter[1].float().t())
    features = features / features.norm(dim=-1, keepdim=True)
    text = text_features.float() / text_features.float().norm(dim=-1, keepdim=True)
    logits = logit_scale.float().exp() * features @ text.t()
    group_scores = [
        (logits[:, start : start + len(levels)].softmax(dim=-1) * levels.float()).sum(dim=-1)
        for start in range(0, logits.shape[1], len(levels))
    ]
    return torch.stack(group_scores).mean(dim=0)


@torch.no_grad()
def check_parity(
    model,
    processor,
    state: Mapping[str, torch.Tensor],
    tokenizer,
    heads: Mapping[str, Mapping[str, torch.Tensor]],
    atol: float,
) -> dict[str, float]:
    """Compare the converted model with the functional reference; raise ParityError above `atol`."""
    config = model.config
    differences = {}
    with warnings.catch_warnings():  # one parity image is deliberately smaller than a crop
        warnings.simplefilter("ignore", UserWarning)
        inputs = processor(parity_images(config.image_size), return_tensors="pt")
    pixel_values = inputs["pixel_values"]
    batch, num_crops = pixel_values.shape[:2]
    crops = pixel_values.flatten(0, 1)
    if config.backbone_type == "vit":
        if not config.use_position_embedding:  # upstream's pos_embedding=False adds nothing: a zero table
            state = {**state, "visual.positional_embedding": torch.zeros_like(state["visual.positional_embedding"])}
        reference_embeds = encode_image_vit(state, crops)
    else:
        reference_embeds = encode_image_resnet(state, crops, position_embedding="legacy_1d")
    differences["image_embeds"] = assert_parity(
        "image embeddings", model.get_image_features(crops), reference_embeds, atol
    )
    for task in TASKS:
        prompts = config.prompts(task)
        reference_text = encode_text(state, openai_tokenize(tokenizer, prompts))
        differences[f"{task}_text"] = assert_parity(
            f"{task} prompt features",
            model.heads[task].prompt_text_features,
            reference_text / reference_text.norm(dim=-1, keepdim=True),
            atol,
        )
        head = heads.get(task, {})
        adapter = (head["adapter.fc.0.weight"], head["adapter.fc.2.weight"]) if "adapter.fc.0.weight" in head else None
        levels = head.get("score_level", torch.tensor(config.score_levels_init))
        expected = reference_head_scores(reference_embeds, reference_text, state["logit_scale"], levels, adapter)
        expected = expected.reshape(batch, num_crops).mean(dim=1)
        differences[f"{task}_scores"] = assert_parity(
            f"{task} scores", model(**inputs, task=task).scores, expected, atol
        )
    return differences


# ----------------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------------
def convert(
    checkpoint: str | Path,
    output_dir: str | Path,
    fp16_roundtrip_weights: bool = True,
    task: str = "quality",
    quality_head: str | Path | None = None,
    aesthetics_head: str | Path | None = None,
    license: str = "cc-by-nc-sa-4.0",
    overwrite: bool = False,
    atol: float = 1e-5,
    prompt_ensemble: str | None = None,
    position_embedding: bool = True,
    progress: bool | None = None,
    aesthetics_prompts: str = "released",
) -> ConversionResult:
    """Original UniQA CLIP checkpoint (+ optional trained heads) -> verified Hub-ready folder. `prompt_ensemble`
    ("uniqa", "uniqa_agiqa") scores the quality head against that upstream prompt ensemble; `position_embedding=False`
    runs the ViT without position embeddings, as upstream's ensemble heads do; `aesthetics_prompts` ("released":
    upstream's quality prompts, as its architecture scores the aesthetics head; "aesthetic": hf_iqa's
    `... aesthetic image`) names the aesthetics head's prompts. `overwrite` replaces only the files
    of an earlier conversion; `progress` shows the stages on stderr (default: on unless HF_IQA_NO_PROGRESS)."""
    check_output_dir(output_dir, overwrite)  # fail before the work
    with Stages("convert uniqa", 5, progress_enabled(progress)) as stages:
        return _convert(
            checkpoint, output_dir, stages, fp16_roundtrip_weights, task, quality_head, aesthetics_head, license,
            overwrite, atol, prompt_ensemble, position_embedding, aesthetics_prompts,
        )  # fmt: skip


def _convert(
    checkpoint, output_dir, stages, fp16_roundtrip_weights, task, quality_head, aesthetics_head, license, overwrite,
    atol, prompt_ensemble, position_embedding, aesthetics_prompts="released",
) -> ConversionResult:  # fmt: skip
    from hf_iqa.models import register_all
    from hf_iqa.models.uniqa import UniQaImageProcessor
    from hf_iqa.models.uniqa.configuration_uniqa import AESTHETICS_PROMPTS

    register_all()  # so save_pretrained writes auto_map and copies the model code
    if task not in TASKS:
        raise ConversionError(f"unknown task {task!r}; choose from {TASKS}")
    stages.stage("loading the checkpoint")
    state = openai_state_dict(load_checkpoint(checkpoint), str(checkpoint))
    backbone = detect_backbone(state)
    rounded: list[str] = []
    if fp16_roundtrip_weights:
        state, rounded = fp16_roundtrip(state)
        logger.info("fp16 round trip applied to %d tensors (as upstream's loader does)", len(rounded))
    stages.stage("building the model")
    model = build_model(state, backbone, task)
    model.config.use_position_embedding = position_embedding
    model.config.aesthetics_prompts = aesthetics_prompts
    model.config.prompt_templates["aesthetics"] = AESTHETICS_PROMPTS.get(aesthetics_prompts, aesthetics_prompts)
    try:
        model.config.validate_uniqa()
    except ValueError as error:
        raise ConversionError(str(error)) from None
    logger.info("%s: %s", checkpoint, describe_backbone(model.config))

    heads = {}
    for head_task, path in (("quality", quality_head), ("aesthetics", aesthetics_head)):
        if path is not None:
            heads[head_task] = dict(load_checkpoint(path))
            try:
                model.load_task_head(head_task, heads[head_task])
            except ValueError as error:
                raise ConversionError(f"{path}: {error}") from None
    stages.stage("prompt features")
    tokenizer = build_clip_tokenizer()
    if prompt_ensemble is not None:
        try:
            model.set_prompt_groups("quality", prompt_ensemble, tokenizer)
        except ValueError as error:
            raise ConversionError(str(error)) from None
    model.compute_prompt_text_features(tokenizer)
    size = model.config.image_size
    processor = UniQaImageProcessor(crop_size={"height": size, "width": size})
    stages.stage("parity check against the original architecture")
    differences = check_parity(model, processor, state, tokenizer, heads, atol)

    stages.stage("saving, reloading the saved folder and checking it")
    card = render_uniqa_card(model.config, Path(checkpoint).name, fp16_roundtrip_weights, sorted(heads), license)
    with staged_output_dir(output_dir, overwrite) as staging:
        files = save_hub_folder(staging, model, processor, tokenizer, card)

        # The saved folder must score exactly as the verified in-memory model.
        from transformers import AutoModel

        reloaded = AutoModel.from_pretrained(str(staging)).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            inputs = processor(parity_images(size)[:2], return_tensors="pt")
        with torch.no_grad():
            for head_task in TASKS:
                assert_parity(
                    f"reloaded {head_task} scores",
                    reloaded(**inputs, task=head_task).scores,
                    model(**inputs, task=head_task).scores,
                    0.0,
                )
    return ConversionResult(Path(output_dir), files, differences, backbone)


def render_uniqa_card(config, source_file: str, fp16_roundtrip_weights: bool, trained_heads: list[str], license: str):
    if trained_heads:
        heads = "trained adapter head(s) for " + ", ".join(f"`{task}`" for task in trained_heads)
        heads += "; other heads zero-shot"
    else:
        heads = "zero-shot heads only (no adapter; fixed levels 0.2, 0.4, 0.6, 0.8, 1.0), as released"
    fp16 = (
        "applied: the Conv/Linear weights were rounded through fp16 as upstream's loader does, so scores match "
        "the original code"
        if fp16_roundtrip_weights
        else "not applied: the weights are used as stored in the file"
    )
    low, high = config.task_score_ranges[config.task]
    if "quality" in config.prompt_groups:
        groups = config.prompt_groups["quality"]
        quality_prompts = (
            f"upstream's prompt ensemble, {len(groups)} groups of five (one softmax per group, group scores "
            "averaged): " + "; ".join(", ".join(f"`{p}`" for p in group) for group in groups)
        )
    else:
        quality_prompts = "`bad image`, `poor image`, `fair image`, `good image`, `perfect image` (upstream, verbatim)"
    aesthetics = [p for p in config.prompts("aesthetics")]
    aesthetics_prompts = f"`{aesthetics[0]}` … `{aesthetics[-1]}` (`aesthetics_prompts={config.aesthetics_prompts!r}`)"
    return render_model_card(
        "uniqa",
        quality_prompts=quality_prompts,
        aesthetics_prompts=aesthetics_prompts,
        license=license,
        backbone=describe_backbone(config),
        source_file=source_file,
        heads=heads,
        fp16_roundtrip=fp16,
        default_task=config.task,
        score_low=f"{low:g}",
        score_high=f"{high:g}",
        crop_size=config.image_size,
    )


def main(argv: list[str] | None = None) -> int:
    from hf_iqa.models.uniqa.configuration_uniqa import PROMPT_ENSEMBLES

    parser = argparse.ArgumentParser(
        prog=program_name("uniqa"), description="Convert the released UniQA checkpoint into a Hub-ready hf_iqa folder."
    )
    parser.add_argument("--checkpoint", required=True, help="UniQA_weight.pt (OpenAI-format CLIP state dict)")
    parser.add_argument(
        "--output-dir", required=True, help="folder to write: new, empty, or an earlier conversion with --overwrite"
    )
    parser.add_argument(
        "--fp16-roundtrip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="round Conv/Linear weights through fp16 like upstream's loader, so scores match the original code "
        "(default; a no-op for fp16 files); --no-fp16-roundtrip keeps an fp32 file's weights as stored",
    )
    parser.add_argument("--task", default="quality", choices=TASKS, help="head used by default (config.task)")
    parser.add_argument("--quality-head", help="trained quality head (pyiqa net_g_*.pth or safetensors)")
    parser.add_argument("--aesthetics-head", help="trained aesthetics head (pyiqa net_g_*.pth or safetensors)")
    parser.add_argument(
        "--prompt-ensemble",
        choices=sorted(PROMPT_ENSEMBLES),
        help="score the quality head against this upstream prompt ensemble (4 groups: quality, blur, noise, "
        "low/high quality; or image + content for AI-generated images) instead of the five 'bad ... perfect image'",
    )
    parser.add_argument(
        "--no-position-embedding",
        action="store_true",
        help="ViT without position embeddings, as upstream's prompt-ensemble heads run (pos_embedding=False); "
        "needed for heads trained that way",
    )
    parser.add_argument(
        "--aesthetics-prompts",
        default="released",
        choices=["released", "aesthetic"],
        help="prompts of the aesthetics head: 'released' (default; 'bad image' ... 'perfect image', as upstream "
        "scores its aesthetics head) or 'aesthetic' ('bad aesthetic image' ...; an hf_iqa alternative)",
    )
    parser.add_argument("--license", default="cc-by-nc-sa-4.0", help="licence id for the model card")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with one_line_errors(program_name("uniqa")):
        result = convert(
            args.checkpoint,
            args.output_dir,
            fp16_roundtrip_weights=args.fp16_roundtrip,
            task=args.task,
            quality_head=args.quality_head,
            aesthetics_head=args.aesthetics_head,
            license=args.license,
            prompt_ensemble=args.prompt_ensemble,
            position_embedding=not args.no_position_embedding,
            aesthetics_prompts=args.aesthetics_prompts,
            **common_options(args),
        )
    figures = ", ".join(f"{key} {value:.2g}" for key, value in result.max_differences.items())
    print(f"backbone: {result.backbone}; parity vs the original architecture (max |diff|): {figures}")
    print(f"wrote {result.output_dir} ({', '.join(result.files)})")
    push_if_asked(args, result.output_dir, program_name("uniqa"))  # only reached when the parity check passed
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
