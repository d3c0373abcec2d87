"""QualiCLIP and QualiCLIP+: a CLIP ResNet-50 image tower run at native resolution and scored against 14 stored
antonym-prompt features.

The file holds two parts:
1. the OpenAI CLIP "modified ResNet" image tower (`ClipResNet*` classes), which transformers does not have: a
   three-conv stem, anti-aliased average-pool downsampling and an attention pool whose only query is the mean
   token. It is a self-contained block, copied into other model folders that need it (UniQA; `# Copied from`
   markers there, checked by `utils/check_copies.py`);
2. `QualiClipModel`: tower + stored prompt features -> quality score; optionally the CLIP text tower and the
   QualiCLIP+ prompt learner, kept only to recompute or retrain the prompt features.

The inference speed-ups (BatchNorm folding, the memory-map release) live in `fast_qualiclip.py`.
This file is a Hub unit: it imports only torch, transformers and same-folder files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextModel, PreTrainedModel
from transformers import initialization as init
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_qualiclip import ClipResNetConfig, QualiClipConfig
from .fast_qualiclip import conv_batch_norm, forget_folded_weights, own_unconverted_tensors


class ClipResNetDownsample(nn.Module):
    """Shortcut projection: average pool (anti-aliased stride), then 1x1 conv + BatchNorm."""

    def __init__(self, config: ClipResNetConfig, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps)

    def forward(self, x: torch.Tensor, fold: bool) -> torch.Tensor:
        return conv_batch_norm(self.pool(x), self.conv, self.bn, fold)


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


@dataclass
class QualiClipOutput(ModelOutput):
    """
    scores: (batch,) quality in [0, 1], higher is better: the mean of `pair_probs`.
    pair_probs: (batch, pairs) probability of the positive prompt of each antonym pair.
    logits: (batch, pairs, 2) scaled cosine similarities to the (positive, negative) prompts.
    image_embeds: (batch, projection_dim) L2-normalised image embeddings.
    """

    scores: torch.Tensor | None = None
    pair_probs: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None


class QualiClipPromptLearner(nn.Module):
    """QualiCLIP+'s learned context (pyiqa, CoOp-style, "class in the middle"): for each prompt, the SOS
    embedding, `n_ctx // 2` learned vectors, the prompt's word embeddings, the other learned vectors, then EOS and
    padding. `token_prefix` / `token_suffix` are the token embeddings of `"X " * n_ctx + prompt` around the
    placeholders, stored as in pyiqa's checkpoints."""

    def __init__(self, config: QualiClipConfig):
        super().__init__()
        text = config.text_config
        num_prompts = 2 * len(config.prompt_pairs)
        suffix_length = text.max_position_embeddings - 1 - config.n_ctx
        self.n_ctx = config.n_ctx
        self.token_lengths = list(config.prompt_token_lengths)
        self.ctx = nn.Parameter(torch.empty(num_prompts, config.n_ctx, text.hidden_size))
        self.register_buffer("token_prefix", torch.zeros(num_prompts, 1, text.hidden_size))
        self.register_buffer("token_suffix", torch.zeros(num_prompts, suffix_length, text.hidden_size))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the (prompts, 77, width) input embeddings and the EOS position of each prompt."""
        half = self.n_ctx // 2
        ctx = self.ctx.to(self.token_prefix.dtype)
        rows = []
        for i, length in enumerate(self.token_lengths):
            suffix = self.token_suffix[i]
            rows.append(
                torch.cat([self.token_prefix[i], ctx[i, :half], suffix[:length], ctx[i, half:], suffix[length:]])
            )
        eos_positions = torch.tensor([1 + self.n_ctx + length for length in self.token_lengths])
        return torch.stack(rows), eos_positions.to(self.ctx.device)


class QualiClipPreTrainedModel(PreTrainedModel):
    config_class = QualiClipConfig
    config: QualiClipConfig
    base_model_prefix = "vision_model"  # the CLIP ResNet tower: a saved `ClipResNetVisionModel` initialises it
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["ClipResNetBottleneck", "CLIPEncoderLayer", "CLIPTextEmbeddings"]
    _supports_sdpa = True
    # the 14 prompt features stay fp32 under `from_pretrained(dtype=bfloat16/float16)`: the scale (100) amplifies
    # their rounding error, and they cost nothing
    _keep_in_fp32_modules_strict = ["prompt_text_features"]

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
        if isinstance(module, QualiClipModel):
            features = torch.randn(module.prompt_text_features.shape, generator=torch.Generator().manual_seed(0))
            init.copy_(module.prompt_text_features, F.normalize(features, dim=-1))
            if module.text_model is not None:
                init.constant_(module.logit_scale, math.log(1 / 0.07))
                init.normal_(module.text_projection.weight, std=module.text_projection.in_features**-0.5)
        elif isinstance(module, QualiClipPromptLearner):
            init.normal_(module.ctx, std=0.02)


class QualiClipModel(QualiClipPreTrainedModel):
    """QualiCLIP / QualiCLIP+ quality model.

    `pixel_values` is a (B, 3, H, W) tensor or a list of (3, H, W) tensors of any sizes (native resolution, no
    resizing). Images of the same shape run together, in chunks of at most `config.max_pixels_per_forward`
    pixels; nothing is ever padded (padding would leak into the attention pool's mean token and change scores).
    """

    def __init__(self, config: QualiClipConfig):
        super().__init__(config)
        config.validate_qualiclip()  # again: keyword arguments of `from_pretrained` are set after `__post_init__`
        self.vision_model = ClipResNetVisionModel._from_config(config.vision_config)
        num_prompts = 2 * len(config.prompt_pairs)
        self.register_buffer("prompt_text_features", torch.zeros(num_prompts, config.projection_dim))
        self.text_model = None
        self.prompt_learner = None
        if config.text_config is not None:
            self.text_model = CLIPTextModel._from_config(config.text_config)
            self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
            if config.use_prompt_learner:
                self.prompt_learner = QualiClipPromptLearner(config)
        self.post_init()

    # ---- image side ------------------------------------------------------------------------------------------
    def get_image_features(self, pixel_values: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """(B, projection_dim) image embeddings, not normalised, in input order."""
        if isinstance(pixel_values, torch.Tensor) and pixel_values.ndim == 4:
            per_chunk = self._images_per_chunk(pixel_values.shape[-2:])
            chunks = pixel_values.split(per_chunk)
            return torch.cat([self.vision_model(chunk).pooler_output for chunk in chunks])
        images = _as_image_list(pixel_values)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(tuple(image.shape), []).append(index)
        embeddings, order = [], []
        for shape, indices in groups.items():
            per_chunk = self._images_per_chunk(shape[-2:])
            for start in range(0, len(indices), per_chunk):
                chunk = indices[start : start + per_chunk]
                batch = torch.stack([images[i] for i in chunk])  # one chunk at a time: bounded extra memory
                embeddings.append(self.vision_model(batch).pooler_output)
                order.extend(chunk)
        embeddings = torch.cat(embeddings)
        if order != sorted(order):
            embeddings = embeddings[torch.tensor(order).argsort().to(embeddings.device)]
        return embeddings

    def _images_per_chunk(self, size: tuple[int, int]) -> int:
        return max(1, self.config.max_pixels_per_forward // (size[0] * size[1]))

    def forward(
        self, pixel_values: torch.Tensor | list[torch.Tensor], return_dict: bool | None = None, **kwargs
    ) -> QualiClipOutput | tuple:
        image_embeds = F.normalize(self.get_image_features(pixel_values).float(), dim=-1)
        cosine = image_embeds @ self.prompt_text_features.float().t()
        logits = (self.config.prompt_logit_scale * cosine).view(cosine.shape[0], -1, 2)
        pair_probs = logits.softmax(dim=-1)[..., 0]
        output = QualiClipOutput(
            scores=pair_probs.mean(dim=-1), pair_probs=pair_probs, logits=logits, image_embeds=image_embeds
        )
        return output if return_dict is not False else output.to_tuple()

    # ---- text side (optional; only to recompute or retrain the stored prompt features) -------------------------
    def _require_text_tower(self) -> None:
        if self.text_model is None:
            raise ValueError(
                "this QualiCLIP checkpoint is image-only (text_config=None): its prompt features are stored in "
                "`prompt_text_features`; convert with --keep-text-tower to get the text tower"
            )

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, projection_dim) projected CLIP text embeddings (not normalised) of tokenised prompts."""
        self._require_text_tower()
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.text_projection(pooled)

    def get_prompt_learner_features(self) -> torch.Tensor:
        """(2 * pairs, projection_dim) text embeddings of the QualiCLIP+ learned prompts (not normalised)."""
        self._require_text_tower()
        if self.prompt_learner is None:
            raise ValueError("this checkpoint has no QualiCLIP+ prompt learner (config.use_prompt_learner=False)")
        prompt_embeds, eos_positions = self.prompt_learner()
        hidden = self.text_model.embeddings(inputs_embeds=prompt_embeds)
        # positional: the 4th argument (no cache here) is `past_key_values` before transformers 5.24, `cache` after
        mask = create_causal_mask(self.text_model.config, hidden, None, None)
        hidden = self.text_model.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True).last_hidden_state
        hidden = self.text_model.final_layer_norm(hidden)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eos_positions]
        return self.text_projection(pooled)

    @torch.no_grad()
    def compute_prompt_text_features(self, tokenizer=None, prompts: list[str] | None = None) -> torch.Tensor:
        """Encode the prompts with the text tower, store them L2-normalised in `prompt_text_features` and return them
        (2 * pairs, projection_dim). Same name and arguments as in the other hf_iqa models, with one difference:
        QualiCLIP+ (a prompt learner) encodes its learned prompts, so `tokenizer` and `prompts` are not used (call it
        after training `ctx`); QualiCLIP tokenises `prompts` (default `config.prompts`: positive 1, negative 1, ...)
        padded to the context length, like OpenAI's `clip.tokenize`. Needs a checkpoint kept with its text tower."""
        self._require_text_tower()
        if self.prompt_learner is not None:
            if prompts is not None:
                raise ValueError("QualiCLIP+ prompts are learned: compute_prompt_text_features takes no `prompts`")
            features = self.get_prompt_learner_features()
        else:
            if tokenizer is None:
                raise ValueError("compute_prompt_text_features needs the CLIP tokenizer (no prompt learner here)")
            prompts = self.config.prompts if prompts is None else prompts
            if len(prompts) != self.prompt_text_features.shape[0]:
                raise ValueError(f"expected {self.prompt_text_features.shape[0]} prompts, got {len(prompts)}")
            length = self.config.text_config.max_position_embeddings
            tokens = tokenizer(prompts, padding="max_length", max_length=length, return_tensors="pt")
            features = self.get_text_features(tokens["input_ids"].to(self.prompt_text_features.device))
        features = F.normalize(features.float(), dim=-1)
        self.prompt_text_features.copy_(features.to(self.prompt_text_features.dtype))
        return features


def _as_image_list(pixel_values: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    """A (B, 3, H, W) tensor, a (3, H, W) tensor or a list of (3, H, W) / (b, 3, H, W) tensors -> list of (3, H, W)."""
    if isinstance(pixel_values, torch.Tensor):
        items = [pixel_values]
    elif isinstance(pixel_values, (list, tuple)):
        items = list(pixel_values)
    else:
        raise TypeError(f"pixel_values must be a tensor or a list of tensors, got {type(pixel_values).__name__}")
    images = []
    for item in items:
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"pixel_values must hold tensors, got {type(item).__name__}")
        if item.ndim == 3:
            item = item[None]
        if item.ndim != 4 or item.shape[1] != 3:
            raise ValueError(
                f"pixel_values entries must have shape (3, H, W) or (B, 3, H, W), got {tuple(item.shape)}"
            )
        images.extend(item.unbind(0))
    if not images:
        raise ValueError("pixel_values is empty")
    return images


__all__ = [
    "ClipResNetPreTrainedModel",
    "ClipResNetVisionModel",
    "QualiClipModel",
    "QualiClipOutput",
    "QualiClipPreTrainedModel",
]
