"""Backbone adapters: how Dog-IQA talks to a multimodal LLM.

An adapter turns views (RGB crops) into model inputs for one MLLM family and returns the next-token logits after
the prompt, in left-padded batches, optionally on top of the KV cache of the image-free prompt prefix (chat header
+ standards), which the caller computes with `prefix_cache()` and keeps (an adapter stores no cache). Everything else
(dedup, caches, score reading, aggregation) is backbone-independent.

No torchvision: the processors of Qwen2-VL / SmolVLM have a video-processor slot and cannot be built without it, so
adapters use the `*ImageProcessorPil` classes and expand the image tokens themselves.

Adding a backbone (e.g. mPLUG-Owl3, whose images enter through cross-attention instead of tokens): write a
subclass in a file of this folder, decorate it with `@register_backbone_adapter`, and import that file from
`modeling_dog_iqa.py` (so `save_pretrained` copies it). Override `encode_views` / `position_ids` /
`model_inputs`, or `next_token_logits` as a whole when the input layout differs (e.g. `media_offset`).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import torch
from PIL import Image
from transformers.modeling_outputs import CausalLMOutputWithPast

# transformers 5.24 renamed the KV cache argument and output field from `past_key_values` to `cache` (the old name
# warns until 5.40); the installed version's name.
CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
BACKBONE_ADAPTERS: dict[str, type[BackboneAdapter]] = {}


def register_backbone_adapter(cls: type[BackboneAdapter]) -> type[BackboneAdapter]:
    """Register an adapter under its `name` and every `model_types` entry (a later registration wins)."""
    BACKBONE_ADAPTERS[cls.name] = cls
    for model_type in cls.model_types:
        BACKBONE_ADAPTERS[model_type] = cls
    return cls


def adapter_class_for(model_type: str, backbone: str | None = None) -> type[BackboneAdapter]:
    key = backbone or model_type
    if key not in BACKBONE_ADAPTERS:
        raise ValueError(
            f"Dog-IQA has no backbone adapter for {'backbone' if backbone else 'MLLM model_type'} {key!r}; "
            f"registered: {sorted(BACKBONE_ADAPTERS)}"
        )
    return BACKBONE_ADAPTERS[key]


def load_chat_template(name_or_path: str, tokenizer=None, revision: str | None = None) -> str | None:
    """The chat template of an MLLM repo: the tokenizer's, else `chat_template.jinja` / `chat_template.json` of
    the repo (where processors keep it), else None (the adapter's fallback format is used)."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    from transformers.utils import cached_file

    for filename in ("chat_template.jinja", "chat_template.json"):
        try:
            path = cached_file(name_or_path, filename, revision=revision, _raise_exceptions_for_missing_entries=False)
        except OSError:
            path = None
        if path:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            return json.loads(text)["chat_template"] if filename.endswith(".json") else text
    return None


class BackboneAdapter:
    """Base adapter. Subclasses set `name`, `model_types`, `image_placeholder` (what the chat template renders for
    one image) and `fallback_template` (used when the repo has no chat template), and implement `encode_views`."""

    name = "base"
    model_types: tuple[str, ...] = ()
    image_placeholder = "<image>"
    fallback_template = "{user}"
    supports_prefix_cache = True
    image_processor_class_name: str | None = None
    # The precision the released Dog-IQA code ran this MLLM in on GPU (None: no released run; dtype "auto" then
    # means the checkpoint's own). A model loaded without a dtype follows it: see `DogIqaModel.to`.
    released_gpu_dtype: torch.dtype | None = None

    def __init__(self, model, tokenizer, image_processor, config, chat_template: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.config = config
        self.chat_template = chat_template
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.score_token_ids = self._score_token_ids(config.num_levels)
        prefix_text, suffix_text = self.render_prompt()
        self.prefix_ids = self.encode_text(prefix_text)
        self.suffix_ids = self.encode_text(suffix_text)

    # ---- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def load_model(cls, name_or_path: str, **kwargs):
        """The MLLM (kwargs: revision, dtype, device_map, quantization_config, ...)."""
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText.from_pretrained(name_or_path, **kwargs)

    @classmethod
    def load_tokenizer(cls, name_or_path: str, **kwargs):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name_or_path, **kwargs)

    @classmethod
    def load_image_processor(cls, name_or_path: str, revision: str | None = None, **overrides):
        import transformers

        processor_class = getattr(transformers, cls.image_processor_class_name)
        return processor_class.from_pretrained(name_or_path, revision=revision, **overrides)

    # ---- prompt ----------------------------------------------------------------------------------------------
    def render_prompt(self) -> tuple[str, str]:
        """The rendered conversation split at the image: (image-free prefix, text after the image)."""
        cfg = self.config
        user = cfg.user_template.replace("{system}", cfg.system_prompt).replace("{query}", cfg.query_prompt)
        before, after = user.split("{image}", 1)
        if self.chat_template:
            messages = [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": before},
                        {"type": "image"},
                        {"type": "text", "text": after},
                    ],
                }
            ]
            text = self.tokenizer.apply_chat_template(
                messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
            )
        else:
            text = self.fallback_template.replace("{user}", before + self.image_placeholder + after)
        if text.count(self.image_placeholder) != 1:
            raise ValueError(
                f"{self.name} adapter: the rendered prompt must contain {self.image_placeholder!r} exactly once; "
                f"got {text.count(self.image_placeholder)} (check the chat template)"
            )
        prefix, suffix = text.split(self.image_placeholder)
        return prefix, suffix

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _score_token_ids(self, num_levels: int) -> list[int]:
        ids = []
        for level in range(1, num_levels + 1):
            encoded = self.tokenizer(str(level), add_special_tokens=False)["input_ids"]
            if len(encoded) != 1:
                raise ValueError(f"{self.name} adapter: the digit {level} is not a single token ({encoded})")
            ids.append(encoded[0])
        return ids

    def decode_token(self, token_id: int) -> str:
        return self.tokenizer.decode([int(token_id)])

    # ---- per-family hooks ------------------------------------------------------------------------------------
    def encode_views(self, views: list[Image.Image]) -> tuple[list[list[int]], dict]:
        """Token ids that replace the image placeholder for each view, and the batched image inputs."""
        raise NotImplementedError

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_inputs: dict):
        """Position ids of the full (prefix + padding + suffix) sequence: count of real tokens before each."""
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def prefix_position_ids(self, length: int, device) -> torch.Tensor:
        return torch.arange(length, device=device)[None]

    def model_inputs(self, input_ids: torch.Tensor, image_inputs: dict) -> dict:
        """Extra keyword arguments of the MLLM forward for the ids actually fed."""
        return dict(image_inputs)

    # ---- forward ---------------------------------------------------------------------------------------------
    @property
    def device(self):
        return self.model.get_input_embeddings().weight.device

    @torch.no_grad()
    def prefix_cache(self):
        """KV cache of the image-free prefix (batch 1), for `next_token_logits(..., prefix_cache=...)`. A pure
        function of the weights and the prompt: the caller keeps it (`DogIqaCache`) and may reuse it for any views."""
        ids = torch.tensor([self.prefix_ids], device=self.device)
        out = self.model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=self.prefix_position_ids(ids.shape[1], ids.device),
            use_cache=True,
            logits_to_keep=1,
        )
        return getattr(out, CACHE_NAME)

    @torch.no_grad()
    def next_token_logits(self, views: list[Image.Image], prefix_cache=None) -> torch.Tensor:
        """(len(views), vocab) float32 logits of the token after the prompt, one batched forward pass.

        Without `prefix_cache` the batch is left-padded: [pad.. prefix suffix]. With it (from `prefix_cache()`, left
        unchanged) the padding sits between the cached prefix and the suffix: [prefix pad.. suffix]; masks and
        positions make both equal."""
        use_prefix_cache = prefix_cache is not None
        image_ids, image_inputs = self.encode_views(views)
        sequences = [ids + self.suffix_ids for ids in image_ids]
        prefix_len = len(self.prefix_ids)
        width = max(len(s) for s in sequences)
        batch = len(sequences)
        input_ids = torch.full((batch, prefix_len + width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, seq in enumerate(sequences):
            start = prefix_len + width - len(seq)
            input_ids[row, start:] = torch.tensor(seq)
            attention_mask[row, start:] = 1
            prefix_start = 0 if use_prefix_cache else start - prefix_len
            input_ids[row, prefix_start : prefix_start + prefix_len] = torch.tensor(self.prefix_ids, dtype=torch.long)
            attention_mask[row, prefix_start : prefix_start + prefix_len] = 1
        device = self.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        image_inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in image_inputs.items()}
        dtype = self.model.dtype
        image_inputs = {
            k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
            for k, v in image_inputs.items()
        }
        position_ids = self.position_ids(input_ids, attention_mask, image_inputs)
        if use_prefix_cache:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(batch)
            fed = input_ids[:, prefix_len:]
            out = self.model(
                input_ids=fed,
                attention_mask=attention_mask,
                position_ids=position_ids[..., prefix_len:],
                use_cache=True,
                **{CACHE_NAME: cache},
                logits_to_keep=1,
                **self.model_inputs(fed, image_inputs),
            )
        else:
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
                logits_to_keep=1,
                **self.model_inputs(input_ids, image_inputs),
            )
        return out.logits[:, -1].float()

    def full_inputs(self, view: Image.Image) -> dict:
        """Unpadded inputs of one view (prefix + image + suffix), e.g. for `model.generate` baselines."""
        image_ids, image_inputs = self.encode_views([view])
        ids = torch.tensor([self.prefix_ids + image_ids[0] + self.suffix_ids], device=self.device)
        mask = torch.ones_like(ids)
        image_inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in image_inputs.items()}
        return {"input_ids": ids, "attention_mask": mask, **self.model_inputs(ids, image_inputs)}


@register_backbone_adapter
class Qwen2VLAdapter(BackboneAdapter):
    """Qwen2-VL and Qwen2.5-VL: `<|image_pad|>` repeated prod(grid_thw) / merge_size**2 times; M-RoPE positions
    from the model's own `get_rope_index` on the full sequence (so the cached prefix is exact)."""

    name = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    image_placeholder = "<|vision_start|><|image_pad|><|vision_end|>"
    fallback_template = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    image_processor_class_name = "Qwen2VLImageProcessorPil"

    def __init__(self, model, tokenizer, image_processor, config, chat_template=None) -> None:
        super().__init__(model, tokenizer, image_processor, config, chat_template)
        self.vision_start_id = tokenizer.convert_tokens_to_ids("<|vision_start|>")
        self.vision_end_id = tokenizer.convert_tokens_to_ids("<|vision_end|>")
        self.image_token_id = model.config.image_token_id

    def encode_views(self, views):
        encoded = self.image_processor(images=views, return_tensors="pt")
        grid = encoded["image_grid_thw"]
        merge = self.image_processor.merge_size
        ids = [
            [self.vision_start_id] + [self.image_token_id] * (int(thw.prod()) // merge**2) + [self.vision_end_id]
            for thw in grid
        ]
        return ids, {"pixel_values": encoded["pixel_values"], "image_grid_thw": grid}

    def _rope_model(self):
        return getattr(self.model, "model", self.model)

    def position_ids(self, input_ids, attention_mask, image_inputs):
        token_types = (input_ids == self.image_token_id).int()
        position_ids, _ = self._rope_model().get_rope_index(
            input_ids,
            mm_token_type_ids=token_types,
            image_grid_thw=image_inputs["image_grid_thw"],
            attention_mask=attention_mask,
        )
        return position_ids

    def prefix_position_ids(self, length, device):
        return torch.arange(length, device=device).view(1, 1, -1).expand(3, 1, -1)

    def model_inputs(self, input_ids, image_inputs):
        return {**image_inputs, "mm_token_type_ids": (input_ids == self.image_token_id).int()}


@register_backbone_adapter
class Idefics3Adapter(BackboneAdapter):
    """Idefics3 and SmolVLM: each view becomes rows x cols tiles plus a global view, written as
    `<fake_token_around_image><row_i_col_j><image>*image_seq_len ... <global-img>...` (the processors' format)."""

    name = "idefics3"
    model_types = ("idefics3", "smolvlm")
    image_placeholder = "<image>"
    fallback_template = "<|begin_of_text|>User:{user}<end_of_utterance>\nAssistant:"
    image_processor_class_name = "Idefics3ImageProcessorPil"

    @classmethod
    def load_image_processor(cls, name_or_path, revision=None, **overrides):
        import transformers

        config = transformers.AutoConfig.from_pretrained(name_or_path, revision=revision)
        class_name = "SmolVLMImageProcessorPil" if config.model_type == "smolvlm" else "Idefics3ImageProcessorPil"
        return getattr(transformers, class_name).from_pretrained(name_or_path, revision=revision, **overrides)

    def __init__(self, model, tokenizer, image_processor, config, chat_template=None) -> None:
        super().__init__(model, tokenizer, image_processor, config, chat_template)
        vision = model.config.vision_config
        self.image_seq_len = int((vision.image_size // vision.patch_size) ** 2 / model.config.scale_factor**2)

    def image_string(self, rows: int, cols: int) -> str:
        fake, image, glob = "<fake_token_around_image>", "<image>", "<global-img>"
        tokens = image * self.image_seq_len
        if rows == 0 and cols == 0:
            return f"{fake}{glob}{tokens}{fake}"
        text = ""
        for row in range(rows):
            for col in range(cols):
                text += f"{fake}<row_{row + 1}_col_{col + 1}>{tokens}"
            text += "\n"
        return text + f"\n{fake}{glob}{tokens}{fake}"

    def encode_views(self, views):
        encoded = self.image_processor(images=[[v] for v in views], return_tensors="pt", return_row_col_info=True)
        ids_by_grid: dict[tuple[int, int], list[int]] = {}  # this batch's tile layouts, each tokenized once
        ids = []
        for rows, cols in zip(encoded.pop("rows"), encoded.pop("cols")):
            key = (int(rows[0]), int(cols[0]))
            if key not in ids_by_grid:
                ids_by_grid[key] = self.encode_text(self.image_string(*key))
            ids.append(ids_by_grid[key])
        inputs = {"pixel_values": encoded["pixel_values"]}
        if "pixel_attention_mask" in encoded:
            inputs["pixel_attention_mask"] = encoded["pixel_attention_mask"]
        return ids, inputs


def to_pil(view: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(view), "RGB")
