"""Shared conversion helpers: safe checkpoint loading, OpenAI-CLIP -> transformers key maps, parity assertions and
Hub-folder staging. The CLIP tokenizer and constants live in `hf_iqa.openai_clip` (training uses them too)."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ._support import (  # noqa: F401  (re-exported for the converters)
    MANIFEST,
    OutputFolderError,
    Stages,
    check_output_dir,
    program_name,
    progress_enabled,
    say,
    staged_output_dir,
)

logger = logging.getLogger(__name__)


class ConversionError(RuntimeError):
    """A checkpoint that cannot be converted (unknown layout, missing or unexpected keys)."""


class ParityError(ConversionError):
    """The converted model does not reproduce the reference implementation within tolerance."""


# ----------------------------------------------------------------------------------------------------------------
# Loading original checkpoints
# ----------------------------------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load an original checkpoint safely (`weights_only=True`) and unwrap the common containers.

    Handles a bare state dict, pyiqa's `{'params': ...}`, training checkpoints (`model_state_dict`, `state_dict`)
    and DDP's `module.` prefix. Returns a flat `{key: tensor}` dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: checkpoint file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors come in many types
        raise ConversionError(f"{path}: cannot load checkpoint safely ({type(error).__name__}: {error})") from None
    if hasattr(obj, "state_dict") and not isinstance(obj, Mapping):
        obj = obj.state_dict()
    for wrapper in ("params", "params_ema", "model_state_dict", "state_dict", "model"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise ConversionError(f"{path}: expected a state dict, found {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        state[key[len("module.") :] if key.startswith("module.") else key] = value
    return state


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys that start with `prefix`, with it removed (other keys are dropped)."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------------------------------------------
# OpenAI CLIP -> transformers CLIPModel key map
# ----------------------------------------------------------------------------------------------------------------
# Regex on the OpenAI name -> transformers name. Applied in order; the first match wins.
OPENAI_TO_HF_CLIP: list[tuple[str, str]] = [
    (r"^visual\.conv1\.weight$", "vision_model.embeddings.patch_embedding.weight"),
    (r"^visual\.class_embedding$", "vision_model.embeddings.class_embedding"),
    (r"^visual\.positional_embedding$", "vision_model.embeddings.position_embedding.weight"),
    (r"^visual\.ln_pre\.", "vision_model.pre_layrnorm."),
    (r"^visual\.ln_post\.", "vision_model.post_layernorm."),
    (r"^visual\.proj$", "visual_projection.weight"),
    (r"^visual\.transformer\.resblocks\.(\d+)\.", r"vision_model.encoder.layers.\1."),
    (r"^transformer\.resblocks\.(\d+)\.", r"text_model.encoder.layers.\1."),
    (r"^token_embedding\.weight$", "text_model.embeddings.token_embedding.weight"),
    (r"^positional_embedding$", "text_model.embeddings.position_embedding.weight"),
    (r"^ln_final\.", "text_model.final_layer_norm."),
    (r"^text_projection$", "text_projection.weight"),
    (r"^logit_scale$", "logit_scale"),
]
# Inside a residual block.
_BLOCK_RENAMES = [
    ("attn.out_proj.", "self_attn.out_proj."),
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
]
_TRANSPOSED = {"visual_projection.weight", "text_projection.weight"}
_IGNORED_OPENAI_KEYS = {"input_resolution", "context_length", "vocab_size"}


def convert_openai_clip_state_dict(
    state: Mapping[str, torch.Tensor], *, include_vision: bool = True, include_text: bool = True
) -> dict[str, torch.Tensor]:
    """Map an OpenAI-format ViT CLIP state dict to transformers `CLIPModel` names (fp32).

    `attn.in_proj_{weight,bias}` is split into q, k, v (in that order); `visual.proj` and `text_projection` are
    transposed. An unmapped key raises `ConversionError`, so a layout change never goes unnoticed.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key in _IGNORED_OPENAI_KEYS:
            continue
        is_vision = key.startswith("visual.")
        if (is_vision and not include_vision) or (not is_vision and not include_text):
            continue
        for pattern, replacement in OPENAI_TO_HF_CLIP:
            if re.search(pattern, key):
                new_key = re.sub(pattern, replacement, key)
                break
        else:
            raise ConversionError(f"unmapped OpenAI CLIP key: {key}")
        tensor = tensor.detach().to(torch.float32)
        if ".encoder.layers." in new_key:
            if "attn.in_proj_" in new_key:
                suffix = "weight" if new_key.endswith("in_proj_weight") else "bias"
                base = new_key.split("attn.in_proj_")[0]
                for name, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    converted[f"{base}self_attn.{name}.{suffix}"] = chunk.clone()
                continue
            for old, new in _BLOCK_RENAMES:
                new_key = new_key.replace(old, new)
        if new_key in _TRANSPOSED:
            tensor = tensor.t()
        converted[new_key] = tensor.contiguous()
    return converted


def infer_vit_clip_config_kwargs(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Read a ViT CLIP's architecture from OpenAI-format tensor shapes (as OpenAI's `build_model` does)."""
    vision_width = state["visual.conv1.weight"].shape[0]
    patch_size = state["visual.conv1.weight"].shape[-1]
    vision_layers = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    embed_dim = state["text_projection"].shape[1]
    text_width = state["ln_final.weight"].shape[0]
    text_layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    return {
        "projection_dim": int(embed_dim),
        "text_config": {
            "vocab_size": int(state["token_embedding.weight"].shape[0]),
            "hidden_size": int(text_width),
            "intermediate_size": int(state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "num_hidden_layers": int(text_layers),
            "num_attention_heads": int(text_width // 64),
            "max_position_embeddings": int(state["positional_embedding"].shape[0]),
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": int(embed_dim),
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
        },
        "vision_config": {
            "hidden_size": int(vision_width),
            "intermediate_size": int(state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "num_hidden_layers": int(vision_layers),
            "num_attention_heads": int(vision_width // 64),
            "image_size": int(grid * patch_size),
            "patch_size": int(patch_size),
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": int(embed_dim),
        },
    }


# ----------------------------------------------------------------------------------------------------------------
# OpenAI CLIP text tower and ModifiedResNet -> transformers / ClipResNetVisionModel (QualiCLIP and UniQA)
# ----------------------------------------------------------------------------------------------------------------
def infer_text_config_kwargs(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """CLIPTextConfig kwargs from OpenAI text-tower shapes."""
    width = int(state["ln_final.weight"].shape[0])
    return {
        "vocab_size": int(state["token_embedding.weight"].shape[0]),
        "hidden_size": width,
        "intermediate_size": int(state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "num_hidden_layers": len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")}),
        "num_attention_heads": width // 64,
        "max_position_embeddings": int(state["positional_embedding"].shape[0]),
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": int(state["text_projection"].shape[1]),
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    }


def convert_resnet_state_dict(state: Mapping[str, torch.Tensor], prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """OpenAI ModifiedResNet keys -> `ClipResNetVisionModel` keys: a pure rename except the shortcut
    `downsample.0/1` -> `downsample.conv/bn` (the `downsample.-1` average pool has no parameters)."""
    converted = {}
    for key, tensor in state.items():
        if not key.startswith(prefix):
            continue
        name = (
            key[len(prefix) :]
            .replace(".downsample.0.", ".downsample.conv.")
            .replace(".downsample.1.", ".downsample.bn.")
        )
        converted[name] = tensor.detach().to(torch.float32) if tensor.is_floating_point() else tensor.detach()
    return converted


# ----------------------------------------------------------------------------------------------------------------
# Parity and staging
# ----------------------------------------------------------------------------------------------------------------
def assert_parity(name: str, actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> float:
    """Raise `ParityError` when `actual` and `expected` differ by more than `atol`; return the max difference."""
    actual = actual.detach().float().cpu()
    expected = expected.detach().float().cpu()
    if actual.shape != expected.shape:
        raise ParityError(f"{name}: shape {tuple(actual.shape)} != reference {tuple(expected.shape)}")
    difference = (actual - expected).abs().max().item() if actual.numel() else 0.0
    if not difference <= atol:  # also catches NaN
        raise ParityError(f"{name}: max |converted - reference| = {difference:.3g} > {atol:g}; not saving")
    return difference


@contextlib.contextmanager
def one_line_errors(prog: str) -> Iterator[None]:
    """A converter's command line: any failure (a checkpoint that cannot be loaded or converted, a parity
    failure, a refused output folder) becomes one line on stderr and exit status 2, not a traceback."""
    try:
        yield
    except Exception as error:
        known = isinstance(error, (ConversionError, OutputFolderError))
        text = " ".join((str(error) if known else f"{type(error).__name__}: {error}").split())
        if len(text) > 500:
            text = text[:497] + "..."
        logger.debug("%s failed", prog, exc_info=True)
        print(f"{prog}: error: {text}", file=sys.stderr)
        raise SystemExit(2) from None


def render_model_card(method: str, eval_results: list[dict] | None = None, **fields: Any) -> str:
    """Render `model_cards/<method>.md`: `{{name}}` placeholders are replaced by `fields` (every placeholder must be
    given), then the YAML front matter is parsed with `huggingface_hub.ModelCard`.

    `eval_results` (dicts with dataset_name, dataset_type, metric_type, metric_name, value, source_name,
    source_url and optionally dataset_split) become the card's `model-index`; the model name is `fields["title"]`.
    """
    from huggingface_hub import EvalResult, ModelCard

    template = resources.files("hf_iqa").joinpath("model_cards", f"{method}.md").read_text(encoding="utf-8")
    placeholders = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", template))
    missing = placeholders - set(fields)
    if missing:
        raise ConversionError(f"model card {method}.md needs values for: {', '.join(sorted(missing))}")
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: str(fields[m.group(1)]), template)
    card = ModelCard(text)
    if not card.data.to_dict():
        raise ConversionError(f"model card {method}.md has no YAML metadata")
    if eval_results:
        card.data.model_name = str(fields.get("title", method))
        card.data.eval_results = [
            EvalResult(
                task_type="image-quality-assessment",
                task_name="No-Reference Image Quality Assessment",
                dataset_type=r["dataset_type"],
                dataset_name=r["dataset_name"],
                dataset_split=r.get("dataset_split"),
                metric_type=r["metric_type"],
                metric_name=r["metric_name"],
                metric_value=r["value"],
                source_name=r.get("source_name"),
                source_url=r.get("source_url"),
            )
            for r in eval_results
        ]
        text = str(card)
        ModelCard(text)  # the regenerated YAML must parse
    return text


def push_folder_to_hub(
    folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None, message: str | None = None
) -> str:
    """Upload a staged, verified folder to the Hub in one commit; return the repo URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder),
        ignore_patterns=[MANIFEST],  # local bookkeeping of which files the converter wrote
        repo_id=repo_id,
        revision=revision,
        commit_message=message or "Upload model converted with hf_iqa (parity-checked against the original)",
    )
    return str(url)


def add_common_arguments(parser) -> None:
    """The options every converter has: --overwrite, --atol, --push-to-hub / --private / --revision, --no-progress."""
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier conversion in --output-dir"
    )
    parser.add_argument("--atol", type=float, default=1e-5, help="parity tolerance against the reference (fp32)")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the verified folder to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--revision", help="branch to push to (created if missing)")
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the stage bar (also: environment HF_IQA_NO_PROGRESS=1)"
    )


def common_options(args) -> dict:
    """The `convert(...)` keywords read from the options `add_common_arguments` added (the Hub options are read
    later, by `push_if_asked`): `overwrite`, `atol`, and `progress` (None = the default switch, False = hidden)."""
    return {"overwrite": args.overwrite, "atol": args.atol, "progress": False if args.no_progress else None}


def push_if_asked(args, output_dir: str | Path, program: str) -> None:
    """Upload the folder when `--push-to-hub` was given; called only after the parity check passed and the folder
    was written. A failed upload (no network, no token) is one line, like every converter error."""
    if not args.push_to_hub:
        return
    with one_line_errors(program):
        url = push_folder_to_hub(output_dir, args.push_to_hub, args.private, args.revision)
    print(f"pushed to {url}")


def save_hub_folder(
    output_dir: str | Path,
    model,
    image_processor=None,
    tokenizer=None,
    card_text: str | None = None,
) -> list[str]:
    """Write a Hub-ready folder: safetensors weights, config.json with `auto_map`, the model folder's code files
    (copied by `save_pretrained` because the classes are registered for auto classes), processor/tokenizer files
    and README.md. Returns the sorted file names written. Every converter writes its folder here (into a staging
    folder that `staged_output_dir` then publishes), so whatever else a Hub folder needs belongs in this function."""
    output_dir = Path(output_dir)
    model.save_pretrained(str(output_dir))
    if image_processor is not None:
        image_processor.save_pretrained(str(output_dir))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(output_dir))
    if card_text is not None:
        (output_dir / "README.md").write_text(card_text, encoding="utf-8")
    return sorted(p.name for p in output_dir.iterdir())
