"""Dog-IQA backbone adapter for mPLUG-Owl3 (`mPLUG/mPLUG-Owl3-7B-240728`, the paper's MLLM).

Runs on hf_iqa's transformers-5 port (model_type `mplugowl3`, registered by `import hf_iqa`). Images enter through
cross-attention, not tokens: each view becomes its tile layout text ("Cut to R rows C columns with a global view",
one `<|image|>` per tile) and `pixel_values` (one row per tile); the model derives the original's `media_offset` from
the `<|image|>` tokens and the position ids, so left padding and the cached-prefix layout need nothing special.

Prompt and tokens follow the original processor exactly: its ChatML with an empty system turn (not the tokenizer's
Qwen2 chat template), and tokenization chunk by chunk between `<|image|>` tokens. The text before the first tile
(prompt + "Cut to ...") is one chunk, so its last tokens depend on the grid; the cached prefix is the part common to
every grid.
"""

from __future__ import annotations

import torch

from .backbones_dog_iqa import BackboneAdapter, register_backbone_adapter


@register_backbone_adapter
class MplugOwl3Adapter(BackboneAdapter):
    name = "mplug_owl3"
    model_types = ("mplugowl3",)
    image_placeholder = "<|image|>"
    fallback_template = "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    released_gpu_dtype = torch.float16  # the released eval.py: from_pretrained(..., torch_dtype=torch.half)

    @classmethod
    def load_model(cls, name_or_path: str, dtype=None, device_map=None, **kwargs):
        """float16 by default (None or "auto") when the model goes to a GPU, as the released Dog-IQA `eval.py` loads
        it; float32 on CPU (half precision is slow and partly unsupported there). `dtype=torch.bfloat16` gives the
        checkpoint's own type."""
        from transformers import AutoModelForCausalLM

        if dtype is None or dtype == "auto":
            on_gpu = torch.cuda.is_available() and (device_map is not None and device_map != "cpu")
            dtype = cls.released_gpu_dtype if on_gpu or kwargs.get("quantization_config") else torch.float32
        return AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, device_map=device_map, **kwargs)

    @classmethod
    def load_image_processor(cls, name_or_path: str, revision: str | None = None, **overrides):
        """The image processor registered for the repo's config class; the published settings are its defaults
        (384 px tiles, bicubic, mean = std = 0.5, `cut_enable=True`), so no file of the repo is needed."""
        from transformers import AutoConfig
        from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

        config = AutoConfig.from_pretrained(name_or_path, revision=revision)
        if type(config) not in IMAGE_PROCESSOR_MAPPING:
            raise ValueError(
                f"no image processor registered for {type(config).__name__}; `import hf_iqa` registers mPLUG-Owl3"
            )
        return IMAGE_PROCESSOR_MAPPING[type(config)]["pil"](**overrides)

    def __init__(self, model, tokenizer, image_processor, config, chat_template: str | None = None) -> None:
        # the original processor's own ChatML, whatever the tokenizer's chat template says
        super().__init__(model, tokenizer, image_processor, config, chat_template=None)
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_placeholder)
        if model.config.image_token_id is None:
            model.config.image_token_id = self.image_token_id
        elif model.config.image_token_id != self.image_token_id:
            raise ValueError(
                f"mplug_owl3 adapter: tokenizer id of {self.image_placeholder} ({self.image_token_id}) differs from "
                f"model.config.image_token_id ({model.config.image_token_id})"
            )
        self._prompt_text = self.render_prompt()
        # every tile grid the image processor can produce, tokenized once: a table fixed by the prompt, not a cache
        grids = [*image_processor.anchor_grids, (0, 0)]
        self.ids_by_grid = {tuple(grid): self._prompt_ids(tuple(grid)) for grid in grids}
        variants = list(self.ids_by_grid.values())
        common = 0
        while all(len(v) > common and v[common] == variants[0][common] for v in variants):
            common += 1
        self.prefix_ids = variants[0][:common]
        self.suffix_ids = []  # the view-specific ids run to the end of the prompt

    def _prompt_ids(self, grid: tuple[int, int]) -> list[int]:
        """Ids of the whole prompt for a view with this tile grid ((0, 0): not cut), tokenized like the original."""
        prefix, suffix = self._prompt_text
        text = prefix + self.image_processor.placeholder_text(*grid) + suffix
        ids: list[int] = []
        for index, chunk in enumerate(text.split(self.image_placeholder)):
            if index:
                ids.append(self.image_token_id)
            ids.extend(self.encode_text(chunk))
        return ids

    def encode_views(self, views):
        encoded = self.image_processor(views, return_tensors="pt")
        start = len(self.prefix_ids)
        grids = [tuple(grid) for grid in encoded["image_grids"].tolist()]
        ids = [(self.ids_by_grid.get(grid) or self._prompt_ids(grid))[start:] for grid in grids]
        return ids, {"pixel_values": encoded["pixel_values"]}
