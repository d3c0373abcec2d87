"""UniQA model (arXiv 2406.01069): a frozen OpenAI-format CLIP, five level prompts and learnable level values.

Per crop, with f the **unnormalised** image embedding (upstream `UniQA_Adapter_Patchtest`):

    f' = f + ReLU(W2 ReLU(W1 f))            adapter heads only (W1: D -> D/2, W2: D/2 -> D, no biases)
    p  = softmax(exp(logit_scale) * cos(f', t_k))   over the 5 prompts "{bad, poor, fair, good, perfect} image"
    s  = sum_k p_k * level_k               level_k learnable, initialised [0.2, 0.4, 0.6, 0.8, 1.0]

and the image score is the mean of its crop scores (`UniQaImageProcessor` cuts the crops). `logit_scale` is the
checkpoint's trained, unclamped value. Without an adapter (zero-shot: the released weights alone) f' = f.

The prompt features depend only on the frozen text tower, so they are computed once (at conversion, or with
`compute_prompt_text_features`) and stored per head as the persistent buffer `heads.<task>.prompt_text_features`;
those of upstream's prompt ensembles are stored too (`ensembles.<name>.prompt_text_features`), so
`config.prompt_ensemble` can pick one at load time.
Head parameters keep pyiqa's names under `heads.<task>.` (`adapter.fc.0.weight`, `adapter.fc.2.weight`,
`score_level`), so a pyiqa-trained `net_g_*.pth['params']` loads with `load_task_head`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTextModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_uniqa import PROMPT_ENSEMBLES, TASKS, ClipResNetConfig, UniQaConfig
from .fast_uniqa import clip_vision_features, conv_batch_norm, forget_folded_weights, own_unconverted_tensors

try:  # transformers >= 5: init functions that respect already-loaded weights
    from transformers import initialization as init
except ImportError:  # pragma: no cover
    from torch.nn import init


@dataclass
class UniQaOutput(ModelOutput):
    """hf_iqa output contract: `scores` first, higher is better; extras have the batch on dim 0.

    Args:
        scores: (batch,) mean crop score of the active head (quality or aesthetics).
        level_probs: (batch, 5) level probabilities averaged over the crops.
        crop_scores: (batch, num_crops) score of each crop.
        loss: MSE between `scores` and `labels`, when labels are given.
    """

    scores: torch.FloatTensor | None = None
    level_probs: torch.FloatTensor | None = None
    crop_scores: torch.FloatTensor | None = None
    loss: torch.FloatTensor | None = None


class UniQaAdapter(nn.Module):
    """Residual bottleneck D -> D/2 -> D, no biases, ReLU after **both** layers (so the residual is >= 0)."""

    def __init__(self, dim: int, hidden_size: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(dim, hidden_size, bias=False),
            nn.ReLU(),
            nn.Linear(hidden_size, dim, bias=False),
            nn.ReLU(),
        )

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.fc(embeds)


class UniQaHead(nn.Module):
    """One task's head: optional adapter, stored prompt features (one or more groups of level prompts) and the level
    values."""

    def __init__(self, config: UniQaConfig, use_adapter: bool, num_prompts: int | None = None):
        super().__init__()
        dim = config.projection_dim
        self.adapter = UniQaAdapter(dim, config.adapter_hidden_size) if use_adapter else None
        self.score_level = nn.Parameter(torch.tensor(config.score_levels_init, dtype=torch.float32))
        num_prompts = len(config.quality_levels) if num_prompts is None else num_prompts
        self.register_buffer("prompt_text_features", torch.zeros(num_prompts, dim), persistent=True)

    def forward(
        self, image_embeds: torch.Tensor, logit_scale: torch.Tensor, prompt_text_features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) unnormalised image embeddings -> (N,) scores and (N, levels) probabilities (the mean over prompt
        groups of each group's softmax; one group is upstream's single softmax). `prompt_text_features` replaces
        the head's own (a prompt ensemble)."""
        if self.adapter is not None:  # run in the adapter's dtype (bf16 models), add in the embeddings' dtype
            adapted = self.adapter(image_embeds.to(self.adapter.fc[0].weight.dtype))
            image_embeds = image_embeds + adapted.to(image_embeds.dtype)
        image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
        text = self.prompt_text_features if prompt_text_features is None else prompt_text_features
        text = text.to(image_embeds.dtype)
        levels = self.score_level.shape[0]
        logits = (logit_scale * image_embeds @ text.t()).view(image_embeds.shape[0], -1, levels)  # (N, groups, levels)
        probs = logits.softmax(dim=-1)
        scores = (probs * self.score_level.to(probs.dtype)).sum(dim=-1).mean(dim=-1)
        return scores, probs.mean(dim=1)


# Copied from hf_iqa.models.qualiclip.modeling_qualiclip.ClipResNetDownsample
class ClipResNetDownsample(nn.Module):
    """Shortcut projection: average pool (anti-aliased stride), then 1x1 conv + BatchNorm."""

    def __init__(self, config: ClipResNetConfig, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps)

    def forward(self, x: torch.Tensor, fold: bool) -> torch.Tensor:
        return conv_batch_norm(self.pool(x), self.conv, self.bn, fold)


# Copied from hf_iqa.models.qualiclip.modeling_qualiclip.ClipResNetBottleneck
class ClipResNetBottleneck(nn.Module):
    """1x1 -> 3x3 -> (avg pool when strided) -> 1x1 bottleneck; every convolution has stride 1."""

    expansion = 4

    def __init__(self, config: ClipResNetConfig, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out_channels = planes * self.expansion
        eps = config.batch_norm_eps
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=eps)
        self.downsample = None
        if stride > 1 or in_channels != out_channels:
            self.downsample = ClipResNetDownsample(config, in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor, fold: bool) -> torch.Tensor:
        out = conv_batch_norm(x, self.conv1, self.bn1, fold).relu_()
        out = conv_batch_norm(out, self.conv2, self.bn2, fold).relu_()
        out = conv_batch_norm(self.avgpool(out), self.conv3, self.bn3, fold)
        out += x if self.downsample is None else self.downsample(x, fold)
        return out.relu_()


# Copied from hf_iqa.models.qualiclip.modeling_qualiclip.ClipResNetAttentionPool
class ClipResNetAttentionPool(nn.Module):
    """Multi-head attention pooling over `[mean token] + HxW tokens`, with the mean token as the only query.

    Equal to OpenAI's full self-attention followed by taking token 0, at a fraction of the cost. With one query
    per head, no key or value needs projecting: `q_h . (W_k,h t + b_k,h) = (W_k,h^T q_h) . t + const`, and the
    constant cancels in the softmax; `sum_j a_j (W_v,h t_j + b_v,h) = W_v,h (sum_j a_j t_j) + b_v,h` since the
    weights sum to 1. The cost drops from two (HW+1) x C x C projections to a few heads x C x (HW+1) products.
    """

    def __init__(self, config: ClipResNetConfig):
        super().__init__()
        embed_dim = config.width * 32
        grid = config.image_size // 32
        self.config = config  # `position_embedding_mode` is read at call time, like `fold_batch_norm`
        self.num_heads = config.num_attention_heads
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, embed_dim))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, config.projection_dim)

    def position_embedding(self, num_tokens: int) -> torch.Tensor:
        """The (num_tokens, C) table the configured mode adds to the tokens."""
        table = self.positional_embedding
        if self.config.position_embedding_mode == "fixed":
            if num_tokens != table.shape[0]:
                side = int(math.isqrt(table.shape[0] - 1)) * 32
                raise ValueError(
                    f"position_embedding_mode='fixed' needs {side}x{side} inputs ({table.shape[0]} tokens), "
                    f"got {num_tokens} tokens; use 'legacy_1d' or 'none' for other sizes"
                )
            return table
        # pyiqa's `pos_embedding=True`: bicubic resize of the flattened (tokens, C) table along the token axis only.
        resized = F.interpolate(table.float()[None, None], size=(num_tokens, table.shape[1]), mode="bicubic")
        return resized[0, 0].to(table.dtype)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = features.shape
        tokens = features.flatten(2).transpose(1, 2)  # (N, HW, C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # (N, HW + 1, C)
        if self.config.position_embedding_mode != "none":
            tokens = tokens + self.position_embedding(tokens.shape[1]).to(tokens.dtype)
        heads, head_dim = self.num_heads, channels // self.num_heads
        query = self.q_proj(tokens[:, 0]).view(batch, heads, head_dim) * head_dim**-0.5
        # keys folded into the query: (N, heads, C) . (N, C, HW + 1) -> attention logits per head
        key_query = torch.einsum("nhd,hdc->nhc", query, self.k_proj.weight.view(heads, head_dim, channels))
        weights = torch.bmm(key_query, tokens.transpose(1, 2)).softmax(dim=-1, dtype=torch.float32)
        # values after the weighted sum: the mix of tokens each head sees, then its slice of the value projection
        mixed = torch.bmm(weights.to(tokens.dtype), tokens)  # (N, heads, C)
        value_weight = self.v_proj.weight.view(heads, head_dim, channels)
        pooled = torch.einsum("nhc,hdc->nhd", mixed, value_weight).reshape(batch, channels) + self.v_proj.bias
        return self.c_proj(pooled)


# Copied from hf_iqa.models.qualiclip.modeling_qualiclip.ClipResNetPreTrainedModel
class ClipResNetPreTrainedModel(PreTrainedModel):
    config_class = ClipResNetConfig
    config: ClipResNetConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["ClipResNetBottleneck"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """OpenAI CLIP's initialisation (only used for training from scratch; converted weights overwrite it)."""
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, ClipResNetAttentionPool):
            std = module.positional_embedding.shape[1] ** -0.5
            init.normal_(module.positional_embedding, std=std)
            for linear in (module.q_proj, module.k_proj, module.v_proj, module.c_proj):
                init.normal_(linear.weight, std=std)
        elif isinstance(module, ClipResNetBottleneck):
            init.zeros_(module.bn3.weight)


# Copied from hf_iqa.models.qualiclip.modeling_qualiclip.ClipResNetVisionModel
class ClipResNetVisionModel(ClipResNetPreTrainedModel):
    """The CLIP modified-ResNet image tower: (N, 3, H, W) normalised pixels -> (N, projection_dim) embeddings.

    Any H, W work when the attention pool uses no position embedding; sizes are floored at every /2 pooling.
    `last_hidden_state` is the final (N, width * 32, H/32, W/32) feature map, `pooler_output` the embedding.
    """

    def __init__(self, config: ClipResNetConfig):
        super().__init__(config)
        width = config.width
        eps = config.batch_norm_eps
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2, eps=eps)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2, eps=eps)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width, eps=eps)
        self.avgpool = nn.AvgPool2d(2)
        in_channels = width
        for stage, (blocks, stride) in enumerate(zip(config.layers, (1, 2, 2, 2))):
            planes = width * 2**stage
            layer = nn.ModuleList()
            for index in range(blocks):
                layer.append(ClipResNetBottleneck(config, in_channels, planes, stride if index == 0 else 1))
                in_channels = planes * ClipResNetBottleneck.expansion
            self.add_module(f"layer{stage + 1}", layer)
        self.attnpool = ClipResNetAttentionPool(config)
        self.post_init()

    def _apply(self, fn, recurse: bool = True):
        """`.to()`, `.half()`, `.cuda()`... drop the folded-BatchNorm caches of `conv_batch_norm`."""
        forget_folded_weights(self)
        return super()._apply(fn, recurse)

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"pixel_values must have shape (batch, 3, height, width), got {tuple(pixel_values.shape)}"
            )
        if min(pixel_values.shape[-2:]) < 32:
            raise ValueError(
                f"images must be at least 32x32 pixels for the /32 ResNet, got {tuple(pixel_values.shape)}"
            )
        fold = self.config.fold_batch_norm
        # channels-last activations: oneDNN's faster convolution path on CPU (measured 8 % fp32, 25 % bf16)
        x = pixel_values.to(
            device=self.conv1.weight.device, dtype=self.conv1.weight.dtype, memory_format=torch.channels_last
        )
        x = conv_batch_norm(x, self.conv1, self.bn1, fold).relu_()
        x = conv_batch_norm(x, self.conv2, self.bn2, fold).relu_()
        x = conv_batch_norm(x, self.conv3, self.bn3, fold).relu_()
        x = self.avgpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block(x, fold)
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=self.attnpool(x))


# ----------------------------------------------------------------------------------------------------------------
# ResNet backbone: the OpenAI CLIP "modified ResNet" image tower with a transformers CLIP text tower, named like
class UniQaPromptEnsemble(nn.Module):
    """The stored features of one of upstream's prompt ensembles (`config.prompt_ensemble`)."""

    def __init__(self, num_prompts: int, dim: int):
        super().__init__()
        self.register_buffer("prompt_text_features", torch.zeros(num_prompts, dim), persistent=True)


# `CLIPModel` (vision_model, text_model, text_projection, logit_scale).
# ----------------------------------------------------------------------------------------------------------------
class UniQaResNetCLIP(nn.Module):
    def __init__(self, config: UniQaConfig):
        super().__init__()
        text_config = config.clip_config.text_config
        self.vision_model = ClipResNetVisionModel(config.resnet_config)
        self.text_model = CLIPTextModel._from_config(text_config)
        self.text_projection = nn.Linear(text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.clip_config.logit_scale_init_value))

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.vision_model(pixel_values=pixel_values)
        return getattr(features, "pooler_output", features)

    def get_text_features(self, input_ids: torch.Tensor) -> torch.Tensor:
        pooled = self.text_model(input_ids=input_ids).pooler_output
        return self.text_projection(pooled)


class UniQaPreTrainedModel(PreTrainedModel):
    config_class = UniQaConfig
    config: UniQaConfig
    base_model_prefix = "clip"  # a plain transformers CLIP checkpoint initialises `self.clip`
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPEncoderLayer", "CLIPTextEmbeddings", "CLIPVisionEmbeddings", "ClipResNetBottleneck"]
    _supports_sdpa = True
    _supports_flash_attn = True
    # Under `from_pretrained(dtype=bfloat16/float16)` the prompt features, the logit scale and the level values stay
    # fp32, as in LIQE and QualiCLIP: the scale (100) amplifies their rounding error, and they cost nothing.
    _keep_in_fp32_modules_strict = ["prompt_text_features", "logit_scale", "score_level"]

    # Copied from hf_iqa.models.liqe.modeling_liqe.LiqePreTrainedModel.from_pretrained
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

    # Copied from hf_iqa.models.liqe.modeling_liqe.LiqePreTrainedModel.dtype
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
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, UniQaAdapter):
            for layer in (module.fc[0], module.fc[2]):  # torch's nn.Linear default, as upstream trains from
                init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
        elif isinstance(module, UniQaHead):
            init.copy_(module.score_level, torch.tensor(self.config.score_levels_init))
            init.zeros_(module.prompt_text_features)  # replaced by the stored features when loaded
        elif isinstance(module, UniQaPromptEnsemble):
            init.zeros_(module.prompt_text_features)
        elif isinstance(module, UniQaResNetCLIP):
            init.constant_(module.logit_scale, self.config.clip_config.logit_scale_init_value)
            init.normal_(module.text_projection.weight, std=module.text_projection.in_features**-0.5)


class UniQaModel(UniQaPreTrainedModel):
    def __init__(self, config: UniQaConfig):
        super().__init__(config)
        config.validate_uniqa()
        if config.backbone_type == "vit":
            self.clip = CLIPModel(config.clip_config)
        else:
            self.clip = UniQaResNetCLIP(config)
        self.heads = nn.ModuleDict(
            {task: UniQaHead(config, task in config.adapter_tasks, len(config.prompts(task))) for task in TASKS}
        )
        self.ensembles = nn.ModuleDict(
            {
                name: UniQaPromptEnsemble(len(config.ensemble_prompts(name)), config.projection_dim)
                for name in PROMPT_ENSEMBLES
            }
        )
        self.post_init()

    # ------------------------------------------------------------------------------------------------------------
    # Towers
    # ------------------------------------------------------------------------------------------------------------
    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) CLIP-normalised pixels -> (N, D) unnormalised image embeddings."""
        if self.config.backbone_type != "vit":
            return self.clip.get_image_features(pixel_values=pixel_values)
        positions = self.config.use_position_embedding
        vision = self.clip.vision_model
        frozen = not pixel_values.requires_grad and not any(p.requires_grad for p in vision.parameters())
        if (frozen or not torch.is_grad_enabled()) and vision.config._attn_implementation == "sdpa":
            # inference, or adapter training on the frozen backbone: the flat loop, faster and equal to ~1e-7
            with torch.no_grad():
                return clip_vision_features(self.clip, pixel_values, positions)
        if positions:
            features = self.clip.get_image_features(pixel_values=pixel_values)
            return getattr(features, "pooler_output", features)
        # transformers' layers, minus the position embedding (upstream's `pos_embedding=False`)
        embeddings = vision.embeddings
        patches = embeddings.patch_embedding(pixel_values.to(embeddings.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)
        tokens = torch.cat([embeddings.class_embedding.expand(len(patches), 1, -1), patches], dim=1)
        hidden = vision.encoder(inputs_embeds=vision.pre_layrnorm(tokens)).last_hidden_state
        return self.clip.visual_projection(vision.post_layernorm(hidden[:, 0]))

    def get_text_features(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(P, L) token ids, OpenAI layout (end-of-text = the largest id) -> (P, D) unnormalised text embeddings."""
        features = self.clip.get_text_features(input_ids=input_ids)
        return getattr(features, "pooler_output", features)

    @torch.no_grad()
    def compute_prompt_text_features(
        self, tokenizer, prompts: list[str] | None = None, tasks: tuple[str, ...] = TASKS
    ) -> dict[str, torch.Tensor]:
        """Encode each task's prompts (default `config.prompts(task)`) with the text tower, store them L2-normalised in
        its head and return them by task; the features of upstream's prompt ensembles (`ensembles`) are stored as
        well. Call after changing prompts or the text tower.

        Same name and first arguments as in the other hf_iqa models; UniQA has one head per task, hence `tasks`
        and a dict (`prompts` needs a single task)."""
        if prompts is not None and len(tasks) != 1:
            raise ValueError(f"compute_prompt_text_features: `prompts` needs a single task, got tasks={tasks}")
        stored = {}
        for task in tasks:
            features = self._encode_prompts(tokenizer, self.config.prompts(task) if prompts is None else prompts)
            target = self.heads[task].prompt_text_features
            if features.shape != target.shape:
                raise ValueError(f"{len(features)} prompts for the {task} head, which stores {len(target)}")
            target.copy_(features.to(target.dtype))
            stored[task] = features
        for name, ensemble in self.ensembles.items():
            features = self._encode_prompts(tokenizer, self.config.ensemble_prompts(name))
            ensemble.prompt_text_features.copy_(features.to(ensemble.prompt_text_features.dtype))
        return stored

    def _encode_prompts(self, tokenizer, prompts: list[str]) -> torch.Tensor:
        """(P, D) L2-normalised fp32 features of `prompts`, padded to the context length like OpenAI's tokenizer."""
        context_length = self.config.clip_config.text_config.max_position_embeddings
        tokens = tokenizer(prompts, padding="max_length", max_length=context_length, return_tensors="pt")
        device = self.clip.logit_scale.device
        return F.normalize(self.get_text_features(tokens["input_ids"].to(device)).float(), dim=-1)

    @torch.no_grad()
    def set_prompt_groups(self, task: str, groups: list[list[str]] | str | None, tokenizer) -> torch.Tensor:
        """Score `task` against other level prompts: groups of one prompt per level, worst first, or the name of an
        upstream ensemble ("uniqa": 4 groups of quality, blur, noise and low/high-quality prompts, the paper's
        ensemble; "uniqa_agiqa": image + content); None restores the single templated group. Encodes them with
        the text tower (kept in every converted UniQA folder) and stores the features; `save_pretrained` keeps
        the choice."""
        if task not in TASKS:
            raise ValueError(f"set_prompt_groups: task must be one of {TASKS}, got {task!r}")
        if isinstance(groups, str):
            if groups not in PROMPT_ENSEMBLES:
                raise ValueError(f"set_prompt_groups: unknown ensemble {groups!r}; known: {sorted(PROMPT_ENSEMBLES)}")
            groups = PROMPT_ENSEMBLES[groups]
        previous = self.config.prompt_groups
        self.config.prompt_groups = {key: value for key, value in previous.items() if key != task}
        if groups is not None:
            self.config.prompt_groups[task] = [list(group) for group in groups]
        try:
            self.config.validate_uniqa()
        except ValueError:
            self.config.prompt_groups = previous
            raise
        head = self.heads[task]
        features = head.prompt_text_features
        shape = (len(self.config.prompts(task)), features.shape[1])
        head.register_buffer("prompt_text_features", features.new_zeros(shape), persistent=True)
        return self.compute_prompt_text_features(tokenizer, tasks=(task,))[task]

    # ------------------------------------------------------------------------------------------------------------
    # Heads
    # ------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def load_task_head(self, task: str, state_dict: Mapping[str, torch.Tensor] | str | Path) -> None:
        """Load a task head: pyiqa's `adapter.fc.0.weight`, `adapter.fc.2.weight`, `score_level` (optionally
        `prompt_text_features`), from a mapping, a safetensors file or a `torch.load`-able file (loaded with
        `weights_only=True`; pyiqa's `{'params': ...}` wrapper is unwrapped). Adds the adapter if the head has none,
        so a backbone-only (zero-shot) checkpoint plus a trained head gives the adapter model."""
        if task not in TASKS:
            raise ValueError(f"load_task_head: task must be one of {TASKS}, got {task!r}")
        source = str(state_dict) if isinstance(state_dict, (str, Path)) else "state dict"
        if isinstance(state_dict, (str, Path)):
            state_dict = _read_head_file(Path(state_dict))
        state = {key.removeprefix(f"heads.{task}."): value for key, value in state_dict.items()}
        allowed = {"adapter.fc.0.weight", "adapter.fc.2.weight", "score_level", "prompt_text_features"}
        unknown = sorted(set(state) - allowed)
        if unknown:
            raise ValueError(f"{source}: unexpected keys for a UniQA head: {unknown[:8]} (expected {sorted(allowed)})")
        has_adapter = {"adapter.fc.0.weight", "adapter.fc.2.weight"} & set(state)
        if has_adapter and len(has_adapter) != 2:
            raise ValueError(f"{source}: a UniQA adapter needs both adapter.fc.0.weight and adapter.fc.2.weight")
        head = self.heads[task]
        if has_adapter and head.adapter is None:
            hidden = int(state["adapter.fc.0.weight"].shape[0])
            if self.config.adapter_tasks and hidden != self.config.adapter_hidden_size:
                raise ValueError(
                    f"{source}: adapter hidden size {hidden} differs from the other heads' "
                    f"{self.config.adapter_hidden_size}"
                )
            head.adapter = UniQaAdapter(self.config.projection_dim, hidden).to(head.score_level.device)
            self.config.adapter_hidden_size = int(hidden)
            self.config.adapter_tasks = sorted(set(self.config.adapter_tasks) | {task})
        for key, value in state.items():
            target = head.get_parameter(key) if key != "prompt_text_features" else head.prompt_text_features
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"{source}: {key} has shape {tuple(value.shape)}, the model expects {tuple(target.shape)}"
                )
            target.copy_(value.to(target.dtype))
        self.refresh_score_ranges()

    def refresh_score_ranges(self) -> None:
        """Record each head's [min, max] level value in the config (its native score range)."""
        ranges = {}
        for task, head in self.heads.items():
            levels = head.score_level.detach().float()
            # shortest decimal of the float32 value (0.2, not 0.20000000298...), as config.json shows it
            ranges[task] = [float(format(float(levels.min()), ".7g")), float(format(float(levels.max()), ".7g"))]
        self.config.task_score_ranges = ranges

    def save_pretrained(self, *args, **kwargs):
        self.refresh_score_ranges()
        return super().save_pretrained(*args, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # Scoring
    # ------------------------------------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor | list[torch.Tensor],
        labels: torch.Tensor | None = None,
        task: str | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> UniQaOutput | tuple:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch, num_crops, 3, S, S)`):
            CLIP-normalised crops from `UniQaImageProcessor` (a 4-D tensor is one crop per image, e.g. training).
        labels (`torch.Tensor` of shape `(batch,)`, *optional*): target scores (MOS normalised like the levels).
        task (`str`, *optional*): "quality" or "aesthetics"; defaults to `config.task`.
        """
        task = task or self.config.task
        if task not in self.heads:
            raise ValueError(f"UniQaModel: task must be one of {tuple(self.heads)}, got {task!r}")
        if isinstance(pixel_values, (list, tuple)):
            pixel_values = torch.stack([torch.as_tensor(p) for p in pixel_values])
        if pixel_values.dim() == 4:
            pixel_values = pixel_values[:, None]
        size = self.config.image_size
        if pixel_values.dim() != 5 or tuple(pixel_values.shape[2:]) != (3, size, size):
            raise ValueError(
                f"UniQaModel expects pixel_values of shape (batch, num_crops, 3, {size}, {size}) from "
                f"UniQaImageProcessor, got {tuple(pixel_values.shape)}"
            )
        batch, num_crops = pixel_values.shape[:2]
        embeds = self.get_image_features(pixel_values.flatten(0, 1)).float()
        logit_scale = self.clip.logit_scale.float().exp()
        ensemble = self.config.prompt_ensemble if task == "quality" else None
        features = self.ensembles[ensemble].prompt_text_features if ensemble is not None else None
        crop_scores, probs = self.heads[task](embeds, logit_scale, features)
        crop_scores = crop_scores.reshape(batch, num_crops)
        scores = crop_scores.mean(dim=1)
        loss = F.mse_loss(scores, labels.to(scores)) if labels is not None else None
        output = UniQaOutput(
            scores=scores,
            level_probs=probs.reshape(batch, num_crops, -1).mean(dim=1),
            crop_scores=crop_scores,
            loss=loss,
        )
        return output if return_dict is not False else output.to_tuple()


def _read_head_file(path: Path) -> Mapping[str, torch.Tensor]:
    """A head checkpoint from disk, loaded safely; unwraps pyiqa's `params` / `params_ema` containers."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: UniQA head checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: cannot load safely ({type(error).__name__}: {error})") from None
    for wrapper in ("params", "params_ema", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            return state[wrapper]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


__all__ = ["UniQaModel", "UniQaOutput", "UniQaPreTrainedModel"]
