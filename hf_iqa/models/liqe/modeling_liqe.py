"""LIQE model: CLIP windows against quality x scene x distortion prompts (arXiv 2303.14968).

Scoring, as in the original code: L2-normalised embeddings of the selected 224x224 windows and of every prompt;
logits = exp(logit_scale) * cos; the **logits** (not probabilities) are averaged over windows; one softmax over
all prompts; quality / scene / distortion marginals; score = sum_k k * p(quality = k), in [1, 5].

The prompt embeddings depend only on the checkpoint's (fine-tuned) text tower, so they are computed once at
conversion and stored as the persistent buffer `prompt_text_features`; scoring never runs the text tower.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import CLIPModel, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_liqe import LiqeConfig
from .fast_liqe import clip_vision_features, own_unconverted_tensors

try:  # transformers >= 5: init functions that respect already-loaded weights
    from transformers import initialization as init
except ImportError:  # pragma: no cover
    from torch.nn import init


@dataclass
class LiqeOutput(ModelOutput):
    """hf_iqa output contract: `scores` first, higher is better; extras have the batch on dim 0.

    Args:
        scores: (batch,) expected quality level in [1, 5].
        level_probs: (batch, 5) marginal probability of each quality level.
        scene_probs: (batch, 9) marginal scene probabilities (multitask checkpoints only).
        distortion_probs: (batch, 11) marginal distortion probabilities (multitask checkpoints only).
        joint_probs: (batch, 5, 9, 11) joint probabilities (multitask) or (batch, 5).
        logits: (batch, num_prompts) window-averaged logits before the softmax.
    """

    scores: torch.FloatTensor | None = None
    level_probs: torch.FloatTensor | None = None
    scene_probs: torch.FloatTensor | None = None
    distortion_probs: torch.FloatTensor | None = None
    joint_probs: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


class LiqePreTrainedModel(PreTrainedModel):
    config_class = LiqeConfig
    config: LiqeConfig
    base_model_prefix = "clip"  # a plain transformers CLIP checkpoint initialises `self.clip`
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPEncoderLayer", "CLIPTextEmbeddings", "CLIPVisionEmbeddings"]
    _supports_sdpa = True
    _supports_flash_attn = True
    # Under `from_pretrained(dtype=bfloat16/float16)` the prompt embeddings and the logit scale stay fp32: the
    # scale (100) amplifies their rounding error, and they cost nothing.
    _keep_in_fp32_modules_strict = ["prompt_text_features", "logit_scale"]

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loader, then two steps of ours:

        - the tensors kept in fp32 under `dtype=bfloat16/float16` get memory of their own (`own_unconverted_tensors`):
          as loaded they are views into the checkpoint's memory map, which stays whole. Measured with transformers
          5.24, a 398 MB fp32 LIQE folder loaded in bf16: RSS +600 MB with the file still mapped, +219 MB without.
        - a checkpoint of this model that lacks the stored prompt features (converted by an older hf_iqa: LIQE called
          them `text_embeds`) is refused, instead of scoring against their initial values. A bare backbone
          checkpoint (`base_model_prefix`, e.g. a transformers CLIP to train from) loads as before.
        """
        return_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing = set(info["missing_keys"])
        head = [key for key in model.state_dict() if not key.startswith(cls.base_model_prefix + ".")]
        features = [key for key in head if key.rsplit(".", 1)[-1] == "prompt_text_features" and key in missing]
        if features and (info["unexpected_keys"] or any(key not in missing for key in head)):
            source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            raise ValueError(
                f"{source}: the checkpoint has no stored prompt features ({', '.join(features)}); it was saved by an "
                "older hf_iqa version (unexpected keys: "
                f"{', '.join(sorted(info['unexpected_keys'])[:4]) or 'none'}). Convert the original weights again."
            )
        own_unconverted_tensors(model)
        return (model, info) if return_info else model

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the bulk of the weights, i.e. the one `from_pretrained(dtype=...)` was given. transformers
        reports the first floating-point parameter's, which may be a tensor kept in fp32 (`logit_scale`)."""
        numel: dict[torch.dtype, int] = {}
        for parameter in self.parameters():
            if parameter.is_floating_point():
                numel[parameter.dtype] = numel.get(parameter.dtype, 0) + parameter.numel()
        return max(numel, key=numel.get)

    @torch.no_grad()
    def _init_weights(self, module: torch.nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LiqeModel):
            init.zeros_(module.prompt_text_features)  # replaced by the checkpoint's stored embeddings when loaded


class LiqeModel(LiqePreTrainedModel):
    def __init__(self, config: LiqeConfig):
        super().__init__(config)
        config.validate_liqe()  # again: keyword arguments of `from_pretrained` are set after `__post_init__`
        self.clip = CLIPModel(config.clip_config)
        self.register_buffer(
            "prompt_text_features",
            torch.zeros(config.num_prompts, config.clip_config.projection_dim),
            persistent=True,
        )
        self.post_init()

    # ------------------------------------------------------------------------------------------------------------
    # Text side: only needed at conversion, for custom prompts, or when training the text tower.
    # ------------------------------------------------------------------------------------------------------------
    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(num_prompts, projection_dim) prompt embeddings from the text tower, L2-normalised (LIQE compares
        cosines; QualiCLIP's and UniQA's `get_text_features` return them unnormalised, as transformers does)."""
        features = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return F.normalize(getattr(features, "pooler_output", features), dim=-1)

    @torch.no_grad()
    def compute_prompt_text_features(
        self, tokenizer, prompts: list[str] | None = None, batch_size: int = 64
    ) -> torch.Tensor:
        """Encode the prompts (default: `config.prompts`) with the text tower, store them in `prompt_text_features`
        and return them (num_prompts, projection_dim), L2-normalised.

        Call after changing the prompt lists in the config or after fine-tuning the text tower. Prompts are padded
        to the CLIP context length (77) like OpenAI's `clip.tokenize`; CLIP pools at the end-of-text token. Same
        name and first arguments in every hf_iqa model; `batch_size` bounds the text tower's batch (495 prompts).
        """
        prompts = self.config.prompts if prompts is None else prompts
        if len(prompts) != self.config.num_prompts:
            raise ValueError(f"expected {self.config.num_prompts} prompts for this config, got {len(prompts)}")
        device = self.prompt_text_features.device
        chunks = []
        for start in range(0, len(prompts), batch_size):
            tokens = tokenizer(
                prompts[start : start + batch_size],
                padding="max_length",
                max_length=self.config.clip_config.text_config.max_position_embeddings,
                truncation=False,
                return_tensors="pt",
            )
            chunks.append(self.get_text_features(tokens["input_ids"].to(device)).float())
        features = torch.cat(chunks)
        self.prompt_text_features.copy_(features.to(self.prompt_text_features.dtype))
        return features

    # ------------------------------------------------------------------------------------------------------------
    # Image side
    # ------------------------------------------------------------------------------------------------------------
    def get_image_features(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised embeddings (batch, num_patches, dim) of the windows; masked-out windows are not encoded
        (their rows are zero). All windows of all images go through the vision tower in one forward. Unlike
        transformers' `get_image_features`, per window and normalised: LIQE averages window cosines."""
        batch, num_patches = pixel_values.shape[:2]
        flat = pixel_values.reshape(batch * num_patches, *pixel_values.shape[2:])
        keep = None
        if patch_mask is not None and not bool(patch_mask.all()):
            keep = patch_mask.reshape(-1).bool()
            flat = flat[keep]
        if torch.is_grad_enabled() or self.clip.vision_model.config._attn_implementation != "sdpa":
            features = self.clip.get_image_features(pixel_values=flat)
            features = getattr(features, "pooler_output", features)
        else:  # inference: the flat loop of fast_liqe.py, faster and equal to ~1e-7
            features = clip_vision_features(self.clip, flat)
        embeds = features
        if keep is not None:
            embeds = features.new_zeros(batch * num_patches, features.shape[-1])
            embeds[keep] = features
        embeds = embeds.float()
        norms = embeds.norm(dim=-1, keepdim=True)
        embeds = embeds / torch.where(norms > 0, norms, torch.ones_like(norms))
        return embeds.reshape(batch, num_patches, -1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        patch_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> LiqeOutput | tuple:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch, num_patches, 3, 224, 224)`):
            CLIP-normalised windows from `LiqeImageProcessor` (a 4-D tensor is treated as one window per image).
        patch_mask (`torch.Tensor` of shape `(batch, num_patches)`, *optional*):
            1 for real windows, 0 for padding (images with fewer windows than `num_patches`).
        input_ids (`torch.Tensor` of shape `(num_prompts, seq_len)`, *optional*):
            Tokenised prompts; when given, prompt embeddings come from the text tower (training) instead of the
            stored `prompt_text_features`.
        """
        if pixel_values.dim() == 4:
            pixel_values = pixel_values[:, None]
        if pixel_values.dim() != 5:
            raise ValueError(
                "LiqeModel expects pixel_values of shape (batch, num_patches, 3, H, W) from LiqeImageProcessor, "
                f"got {tuple(pixel_values.shape)}"
            )
        if patch_mask is not None and patch_mask.shape != pixel_values.shape[:2]:
            raise ValueError(f"patch_mask shape {tuple(patch_mask.shape)} != {tuple(pixel_values.shape[:2])}")

        image_embeds = self.get_image_features(pixel_values, patch_mask)
        if input_ids is not None:
            prompt_features = self.get_text_features(input_ids, attention_mask).float()
        else:
            prompt_features = self.prompt_text_features.float()
        if prompt_features.shape[0] != self.config.num_prompts:
            raise ValueError(f"{prompt_features.shape[0]} prompt embeddings for {self.config.num_prompts} prompts")

        logit_scale = self.clip.logit_scale.float().exp()
        window_logits = logit_scale * image_embeds @ prompt_features.t()  # (batch, patches, prompts)
        if patch_mask is None:
            logits = window_logits.mean(dim=1)
        else:
            weights = patch_mask.to(window_logits.dtype)[..., None]
            logits = (window_logits * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)

        probs = logits.softmax(dim=-1)
        num_levels = len(self.config.quality_levels)
        levels = torch.arange(1, num_levels + 1, dtype=probs.dtype, device=probs.device)
        if self.config.multitask:
            joint = probs.reshape(-1, num_levels, len(self.config.scenes), len(self.config.distortions))
            level_probs = joint.sum(dim=(2, 3))
            scene_probs = joint.sum(dim=(1, 3))
            distortion_probs = joint.sum(dim=(1, 2))
        else:
            joint, level_probs, scene_probs, distortion_probs = probs, probs, None, None
        scores = (level_probs * levels).sum(dim=-1)

        output = LiqeOutput(
            scores=scores,
            level_probs=level_probs,
            scene_probs=scene_probs,
            distortion_probs=distortion_probs,
            joint_probs=joint,
            logits=logits,
        )
        return output if return_dict is not False else output.to_tuple()


__all__ = ["LiqeModel", "LiqeOutput", "LiqePreTrainedModel"]
