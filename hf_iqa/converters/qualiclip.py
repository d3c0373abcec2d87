"""Convert QualiCLIP / QualiCLIP+ checkpoints into a Hub-ready hf_iqa folder.

Layouts (detected from the keys):
- `full`: the official `qualiclip.pth` or pyiqa's `QualiCLIP.pth`: `clip_model.<OpenAI RN50 CLIP keys>` plus
  `prompts_features` (14 x 1024, normalised). The stored features are used as they are (never re-encoded from the
  prompt list of the official hubconf, which misses a comma).
- `prompt_learner`: pyiqa's `QualiCLIP+_{koniq,clive,flive,spaq}.pth`: only `prompt_learner.{ctx, token_prefix,
  token_suffix}`; needs the `full` checkpoint (`--base-checkpoint QualiCLIP.pth`) for the towers. The 14 prompt
  features are computed once here (prompt learner + text tower), so inference is image-only.

Scale (`prompt_logit_scale`): `official` = 100 (torch.hub model); `pyiqa` = `logit_scale.exp() / 2` (= 50).

Before saving, the converted model is checked against `reference_resnet` (an independent functional forward over
the original keys) at <= 1e-5 in fp32; the saved folder is reloaded and checked again.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hf_iqa.openai_clip import build_clip_tokenizer

from . import reference_clip, reference_resnet
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
    load_checkpoint,
    one_line_errors,
    program_name,
    progress_enabled,
    push_if_asked,
    render_model_card,
    save_hub_folder,
    staged_output_dir,
)

logger = logging.getLogger(__name__)

DATASETS = {"koniq": "KonIQ-10k", "clive": "LIVE Challenge (CLIVE)", "flive": "FLIVE", "spaq": "SPAQ"}
PYIQA_TEMPERATURE = 2.0
PYIQA_PROMPT_LEARNER_KEYS = ("prompt_learner.ctx", "prompt_learner.token_prefix", "prompt_learner.token_suffix")
PARITY_SIZES = ((224, 224), (160, 256), (97, 131))  # (height, width) of the pre-save parity inputs
WEIGHT_LICENCES = {"qualiclip": "cc-by-nc-4.0", "qualiclip+": "cc-by-nc-sa-4.0"}


@dataclass
class ConversionResult:
    output_dir: Path
    variant: str
    prompt_logit_scale: float
    max_difference: float
    files: list[str]
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# Layout, key map, configs
# ----------------------------------------------------------------------------------------------------------------
def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """'full' (CLIP RN50 + prompts_features) or 'prompt_learner' (pyiqa QualiCLIP+); raises otherwise."""
    if all(key in state for key in PYIQA_PROMPT_LEARNER_KEYS):
        return "prompt_learner"
    if "prompts_features" in state and any(k.startswith("clip_model.visual.attnpool.") for k in state):
        return "full"
    sample = ", ".join(sorted(state)[:6])
    raise ConversionError(
        "not a QualiCLIP checkpoint: expected `clip_model.visual.*` + `prompts_features` (qualiclip.pth / "
        f"QualiCLIP.pth) or `prompt_learner.ctx/token_prefix/token_suffix` (QualiCLIP+_*.pth); found keys: {sample}"
    )


def infer_clip_resnet_config_kwargs(state: Mapping[str, torch.Tensor], prefix: str = "visual.") -> dict[str, Any]:
    """Read a CLIP ResNet's architecture from OpenAI-format tensor shapes (as OpenAI's `build_model` does)."""
    try:
        layers = [
            len({k.split(".")[2] for k in state if k.startswith(f"{prefix}layer{stage}.")}) for stage in range(1, 5)
        ]
        width = int(state[f"{prefix}layer1.0.conv1.weight"].shape[0])
        table = state[f"{prefix}attnpool.positional_embedding"]
        output_dim = int(state[f"{prefix}attnpool.c_proj.weight"].shape[0])
    except KeyError as error:
        raise ConversionError(f"missing CLIP ResNet key {error} (is this an RN CLIP checkpoint?)") from None
    return {
        "layers": layers,
        "width": width,
        "projection_dim": output_dim,
        "num_attention_heads": width * 32 // 64,
        "image_size": round(math.sqrt(table.shape[0] - 1)) * 32,
    }


def prompt_token_lengths(prompts: list[str], tokenizer=None) -> list[int]:
    """BPE length of each prompt without SOS/EOS (pyiqa's `name_lens`)."""
    tokenizer = tokenizer or build_clip_tokenizer()
    return [len(tokenizer(prompt)["input_ids"]) - 2 for prompt in prompts]


def _parity_inputs() -> list[torch.Tensor]:
    """Normalised-pixel-like inputs of several sizes: square, non-square, odd, below 224."""
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(3, h, w, generator=generator) for h, w in PARITY_SIZES]


# ----------------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------------
def convert(
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    base_checkpoint: str | Path | None = None,
    protocol: str | None = None,
    prompt_logit_scale: float | None = None,
    dataset: str | None = None,
    keep_text_tower: bool = False,
    overwrite: bool = False,
    atol: float = 1e-5,
    progress: bool | None = None,
) -> ConversionResult:
    """Convert a QualiCLIP (`qualiclip.pth`, `QualiCLIP.pth`) or QualiCLIP+ (`QualiCLIP+_<dataset>.pth` +
    `base_checkpoint=QualiCLIP.pth`) checkpoint, prove parity with the reference forward, save a Hub folder.

    protocol: "official" (scale 100; default for QualiCLIP) or "pyiqa" (scale logit_scale.exp()/2 = 50; default
        and only published protocol for QualiCLIP+); `prompt_logit_scale` overrides both.
    dataset: QualiCLIP+ training set (koniq, clive, flive, spaq); read from the file name when not given. `spaq`
        makes the processor resize the short side to 512, as in pyiqa's SPAQ training and validation.
    keep_text_tower: also save the CLIP text tower (+ tokenizer, + prompt learner for QualiCLIP+) to recompute
        or retrain the prompt features; inference never needs it.
    overwrite: replace the files of an earlier conversion in `output_dir` (other files there are kept; a
        non-empty folder not written by a converter is refused).
    progress: stages on stderr (default: on unless HF_IQA_NO_PROGRESS is set).
    """
    check_output_dir(output_dir, overwrite)  # fail before the slow checks
    with Stages("convert qualiclip", 5, progress_enabled(progress)) as stages:
        return _convert(
            checkpoint, output_dir, stages, base_checkpoint=base_checkpoint, protocol=protocol,
            prompt_logit_scale=prompt_logit_scale, dataset=dataset, keep_text_tower=keep_text_tower,
            overwrite=overwrite, atol=atol,
        )  # fmt: skip


@dataclass
class _Source:
    """What a conversion reads from the checkpoint file(s)."""

    layout: str  # "full" or "prompt_learner" (QualiCLIP+, with the base QualiCLIP weights)
    variant: str  # "qualiclip" or "qualiclip+"
    dataset: str | None  # the QualiCLIP+ training set
    clip_state: dict[str, torch.Tensor]  # OpenAI CLIP keys, `clip_model.` removed
    prompts_features: torch.Tensor  # as stored in the checkpoint
    learner: dict[str, torch.Tensor] | None  # QualiCLIP+'s ctx, token_prefix, token_suffix


def _convert(
    checkpoint: str | Path,
    output_dir: str | Path,
    stages: Stages,
    *,
    base_checkpoint: str | Path | None,
    protocol: str | None,
    prompt_logit_scale: float | None,
    dataset: str | None,
    keep_text_tower: bool,
    overwrite: bool,
    atol: float,
) -> ConversionResult:
    from hf_iqa.models import register_all
    from hf_iqa.models.qualiclip import QualiClipImageProcessor, QualiClipModel

    register_all()  # so save_pretrained writes auto_map and copies the model folder's code
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    stages.stage("loading the checkpoint")
    source = _read_source(checkpoint, base_checkpoint, dataset)
    notes: list[str] = []
    protocol, prompt_logit_scale = _choose_logit_scale(source, protocol, prompt_logit_scale, notes)

    stages.stage("building the model")
    tokenizer = build_clip_tokenizer()
    keep_text = keep_text_tower and "token_embedding.weight" in source.clip_state
    if keep_text_tower and not keep_text:
        raise ConversionError(f"{checkpoint}: --keep-text-tower asked for, but the checkpoint has no text tower")
    needs_text = (
        keep_text or source.variant == "qualiclip+"
    )  # QualiCLIP+ needs it once, to compute the prompt features
    config = _build_config(source, prompt_logit_scale, tokenizer, with_text=needs_text)
    model = _build_model(config, source, needs_text, checkpoint)

    stages.stage("prompt features")
    prompts = [p for pair in config.prompt_pairs for p in pair]
    prompts_features = _prompt_features(model, config, source, tokenizer, prompts, atol, notes)

    stages.stage("parity check against the original architecture")
    inputs = _parity_inputs()
    reference_scores, difference = _check_image_parity(
        model, inputs, source.clip_state, prompts_features, prompt_logit_scale, atol
    )

    if needs_text and not keep_text:  # inference needs only the image tower and the 14 stored features
        image_only = QualiClipModel(_build_config(source, prompt_logit_scale, tokenizer, with_text=False)).eval()
        kept = {k: v for k, v in model.state_dict().items() if k.startswith("vision_model.")}
        image_only.load_state_dict({**kept, "prompt_text_features": model.prompt_text_features}, strict=True)
        model = image_only
    stages.stage("saving, reloading the saved folder and checking it")
    variant, dataset = source.variant, source.dataset
    image_processor = QualiClipImageProcessor(do_resize=dataset == "spaq")
    card = render_model_card("qualiclip", **_card_fields(variant, dataset, protocol, prompt_logit_scale, checkpoint))
    with staged_output_dir(output_dir, overwrite) as staging:
        files = save_hub_folder(staging, model, image_processor, tokenizer if keep_text else None, card)
        reloaded = QualiClipModel.from_pretrained(str(staging)).eval()
        with torch.no_grad():
            assert_parity("reloaded scores", reloaded(pixel_values=inputs).scores, reference_scores, atol)
    for note in notes:
        logger.warning(note)
    return ConversionResult(output_dir, variant, prompt_logit_scale, difference, files, notes)


def _read_source(checkpoint: Path, base_checkpoint: str | Path | None, dataset: str | None) -> _Source:
    """The checkpoint's layout and tensors; a QualiCLIP+ prompt learner also reads the base QualiCLIP weights."""
    state = load_checkpoint(checkpoint)
    layout = detect_layout(state)
    learner: dict[str, torch.Tensor] | None = None
    if layout == "prompt_learner":
        if base_checkpoint is None:
            raise ConversionError(
                f"{checkpoint}: a QualiCLIP+ prompt-learner file needs the QualiCLIP weights too "
                "(--base-checkpoint QualiCLIP.pth)"
            )
        learner = {k.split(".", 1)[1]: state[k].detach().float() for k in PYIQA_PROMPT_LEARNER_KEYS}
        base_path = Path(base_checkpoint)
        state = load_checkpoint(base_path)
        if detect_layout(state) != "full":
            raise ConversionError(f"{base_path}: --base-checkpoint must be a full QualiCLIP checkpoint")
        variant = "qualiclip+"
        if dataset is None:
            match = re.search(r"_(koniq|clive|flive|spaq)", checkpoint.name.lower())
            dataset = match.group(1) if match else None
        if dataset not in DATASETS:
            raise ConversionError(
                f"{checkpoint}: cannot tell the QualiCLIP+ training set from the file name; pass --dataset "
                f"({', '.join(DATASETS)})"
            )
    else:
        variant = "qualiclip"
        if dataset is not None:
            raise ConversionError("--dataset only applies to QualiCLIP+ prompt-learner checkpoints")

    prompts_features = state["prompts_features"].detach().float()
    clip_state = {k[len("clip_model.") :]: v for k, v in state.items() if k.startswith("clip_model.")}
    return _Source(layout, variant, dataset, clip_state, prompts_features, learner)


def _choose_logit_scale(
    source: _Source, protocol: str | None, prompt_logit_scale: float | None, notes: list[str]
) -> tuple[str, float]:
    """The protocol and its prompt logit scale: 100 (official) or the checkpoint's scale / 2 (pyiqa)."""
    clip_state = source.clip_state
    protocol = protocol or ("pyiqa" if source.variant == "qualiclip+" else "official")
    if protocol not in ("official", "pyiqa"):
        raise ConversionError(f"protocol must be 'official' or 'pyiqa', got {protocol!r}")
    checkpoint_scale = float(clip_state["logit_scale"].float().exp()) if "logit_scale" in clip_state else None
    if prompt_logit_scale is None:
        if protocol == "official":
            prompt_logit_scale = 100.0
        elif checkpoint_scale is None:
            raise ConversionError("protocol 'pyiqa' needs `clip_model.logit_scale` in the checkpoint")
        else:
            prompt_logit_scale = round(checkpoint_scale / PYIQA_TEMPERATURE, 4)
    if checkpoint_scale is not None and abs(checkpoint_scale - 100.0) > 1e-2:
        notes.append(f"checkpoint logit_scale.exp() = {checkpoint_scale:.4f} (expected 100)")
    return protocol, prompt_logit_scale


def _build_config(source: _Source, prompt_logit_scale: float, tokenizer, with_text: bool):
    """The QualiClipConfig read from the checkpoint's shapes, with or without the text tower."""
    from hf_iqa.models.qualiclip import QualiClipConfig

    clip_state, learner, variant = source.clip_state, source.learner, source.variant
    vision_kwargs = infer_clip_resnet_config_kwargs(clip_state)
    prompt_pairs = QualiClipConfig().prompt_pairs
    prompts = [p for pair in prompt_pairs for p in pair]
    return QualiClipConfig(
        vision_config=vision_kwargs,
        text_config=infer_text_config_kwargs(clip_state) if with_text else None,
        projection_dim=vision_kwargs["projection_dim"],
        prompt_pairs=prompt_pairs,
        prompt_logit_scale=prompt_logit_scale,
        variant=variant,
        use_prompt_learner=with_text and variant == "qualiclip+",
        n_ctx=learner["ctx"].shape[1] if learner else 16,
        prompt_token_lengths=prompt_token_lengths(prompts, tokenizer) if variant == "qualiclip+" else None,
    )


def _build_model(config, source: _Source, needs_text: bool, checkpoint: Path):
    """A QualiClipModel holding the checkpoint's weights (and its stored prompt features)."""
    from hf_iqa.models.qualiclip import QualiClipModel

    clip_state, learner, prompts_features = source.clip_state, source.learner, source.prompts_features
    expected = (2 * len(config.prompt_pairs), config.projection_dim)
    if source.layout == "full" and tuple(prompts_features.shape) != expected:
        raise ConversionError(f"prompts_features has shape {tuple(prompts_features.shape)}, expected {expected}")

    model = QualiClipModel(config).eval()
    weights = {f"vision_model.{k}": v for k, v in convert_resnet_state_dict(clip_state).items()}
    if needs_text:
        weights.update(convert_openai_clip_state_dict(clip_state, include_vision=False))
    if learner is not None:
        weights.update({f"prompt_learner.{k}": v for k, v in learner.items()})
    weights["prompt_text_features"] = prompts_features  # replaced below for QualiCLIP+
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise ConversionError(f"{checkpoint}: weights do not fit the inferred architecture: {error}") from None
    return model


def _prompt_features(model, config, source: _Source, tokenizer, prompts, atol: float, notes: list[str]):
    """The prompt features the scores use: QualiCLIP+'s computed by the model and checked against the reference
    prompt learner; QualiCLIP's as stored (with notes when they look surprising)."""
    clip_state, learner = source.clip_state, source.learner
    if source.variant == "qualiclip+":
        lengths = config.prompt_token_lengths
        _check_prompt_learner_tokens(learner, clip_state, tokenizer, prompts, config.n_ctx, notes)
        reference_text = F.normalize(
            reference_resnet.encode_prompt_learner(
                clip_state, learner["ctx"], learner["token_prefix"], learner["token_suffix"], lengths
            ),
            dim=-1,
        )
        with torch.no_grad():
            converted_text = model.compute_prompt_text_features().clone()
        assert_parity("QualiCLIP+ prompt features", converted_text, reference_text, atol)
        return reference_text
    _check_stored_prompt_features(source.prompts_features, clip_state, tokenizer, prompts, notes)
    return source.prompts_features


def _check_image_parity(model, inputs, clip_state, prompts_features, prompt_logit_scale: float, atol: float):
    """Image embeddings and scores against the independent reference; returns (reference scores, max difference)."""
    with torch.no_grad():
        output = model(pixel_values=inputs)
    reference_embeds = torch.cat([reference_resnet.encode_image_resnet(clip_state, x[None]) for x in inputs])
    reference_scores = reference_resnet.quality_scores(reference_embeds, prompts_features, prompt_logit_scale)
    difference = max(
        assert_parity("image embeddings", output.image_embeds, F.normalize(reference_embeds, dim=-1), atol),
        assert_parity("scores", output.scores, reference_scores, atol),
    )
    return reference_scores, difference


def _check_stored_prompt_features(features, clip_state, tokenizer, prompts, notes) -> None:
    """Notes (not errors) when the stored features are not unit norm or disagree with the text tower on the
    7 pairs: the official model uses them as stored, so conversion keeps them; the notes flag a surprising file."""
    norms = features.norm(dim=-1)
    if (norms - 1).abs().max() > 1e-3:
        notes.append(f"prompts_features are not unit norm (norms {norms.min():.4f}..{norms.max():.4f})")
    if "token_embedding.weight" not in clip_state:
        return
    ids = reference_clip.openai_tokenize(tokenizer, prompts)
    encoded = F.normalize(reference_clip.encode_text(clip_state, ids), dim=-1)
    cosine = (encoded * F.normalize(features, dim=-1)).sum(-1)
    if cosine.min() < 0.99:
        notes.append(
            f"stored prompts_features vs the text tower's features of the 7 pairs: min cos {cosine.min():.4f}"
        )


def _check_prompt_learner_tokens(learner, clip_state, tokenizer, prompts, n_ctx, notes) -> None:
    """pyiqa stores the token embeddings of "X X ... X <prompt>" around the 16 placeholders; they must match the
    text tower's embeddings of the prompts in our order, or the context would be placed around the wrong words."""
    template = reference_clip.openai_tokenize(tokenizer, ["X " * n_ctx + prompt for prompt in prompts])
    embeddings = clip_state["token_embedding.weight"].float()[template]
    difference = max(
        (embeddings[:, :1] - learner["token_prefix"]).abs().max().item(),
        (embeddings[:, 1 + n_ctx :] - learner["token_suffix"]).abs().max().item(),
    )
    if difference > 1e-4:
        notes.append(
            f"prompt learner token_prefix/suffix differ from the text tower's embeddings of the prompts by "
            f"{difference:.3g}: the prompt list or its order may not match this checkpoint"
        )


def _card_fields(variant: str, dataset: str | None, protocol: str, scale: float, checkpoint: Path) -> dict[str, Any]:
    if variant == "qualiclip+":
        name = "qualiclip+" if dataset == "koniq" else f"qualiclip+-{dataset}"
        description = (
            f"QualiCLIP+ (pyiqa `{name}`): the QualiCLIP image tower, frozen, with prompt context learned on "
            f"{DATASETS[dataset]} by pyiqa (MSE + PLCC loss, 50 epochs)."
        )
        reference = f"pyiqa `{name}`"
    else:
        name = "qualiclip"
        description = "QualiCLIP: CLIP RN50 fine-tuned without human opinion scores (opinion-unaware)."
        reference = (
            "the official torch.hub model (`miccunifi/QualiCLIP`)" if protocol == "official" else "pyiqa `qualiclip`"
        )
    if dataset == "spaq":
        input_note = (
            "The image processor resizes the short side to 512 px (bilinear), the size this checkpoint was trained "
            "and validated on in pyiqa; pyiqa's own `qualiclip+-spaq` inference does not resize, so to reproduce "
            "it exactly load the processor with `do_resize=False`."
        )
    else:
        input_note = "Images are used at native resolution: no resize, no crop."
    return {
        "license": WEIGHT_LICENCES[variant],
        "model_name": name,
        "variant_description": description,
        "protocol": protocol,
        "prompt_logit_scale": f"{scale:g}",
        "reference": reference,
        "input_note": input_note,
        "source_checkpoint": checkpoint.name,
    }


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name("qualiclip"),
        description="Convert QualiCLIP (qualiclip.pth / QualiCLIP.pth) or QualiCLIP+ (QualiCLIP+_<set>.pth) weights.",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="qualiclip.pth, QualiCLIP.pth or QualiCLIP+_{koniq,clive,flive,spaq}.pth"
    )
    parser.add_argument(
        "--output-dir", required=True, help="folder to write: new, empty, or an earlier conversion with --overwrite"
    )
    parser.add_argument("--base-checkpoint", help="QualiCLIP.pth, required with a QualiCLIP+ prompt-learner file")
    parser.add_argument(
        "--protocol",
        choices=("official", "pyiqa"),
        help="score scale to reproduce: official = 100 (QualiCLIP default), pyiqa = logit_scale.exp()/2 = 50 "
        "(QualiCLIP+ default)",
    )
    parser.add_argument("--prompt-logit-scale", type=float, help="explicit scale (overrides --protocol)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), help="QualiCLIP+ training set (default: file name)")
    parser.add_argument("--keep-text-tower", action="store_true", help="also save the text tower and tokenizer")
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with one_line_errors(program_name("qualiclip")):
        result = convert(
            args.checkpoint,
            args.output_dir,
            base_checkpoint=args.base_checkpoint,
            protocol=args.protocol,
            prompt_logit_scale=args.prompt_logit_scale,
            dataset=args.dataset,
            keep_text_tower=args.keep_text_tower,
            **common_options(args),
        )
    print(
        f"{result.variant} -> {result.output_dir} (prompt_logit_scale={result.prompt_logit_scale:g}, "
        f"max |converted - reference| = {result.max_difference:.2e}); files: {', '.join(result.files)}"
    )
    push_if_asked(args, result.output_dir, program_name("qualiclip"))  # only reached when the parity check passed
    return 0
