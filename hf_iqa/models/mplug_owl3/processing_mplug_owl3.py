"""mPLUG-Owl3 processor: ChatML prompt, `<|image|>` expansion into one token per tile, left-padded batches.

Mirrors the original `mPLUGOwl3Processor` (240728) for one sample and extends it to batches:

* Prompt: `<|im_start|>system\n<|im_end|>\n` (an empty system turn unless one is given), then each message as
  `<|im_start|>{role}\n{content}<|im_end|>\n`; a final empty assistant message renders as the generation prompt
  `<|im_start|>assistant\n`.
* Each `<|image|>` in the text is replaced by the image's tile layout (`placeholder_text`), i.e. one `<|image|>` per
  tile, so every row of `pixel_values` has exactly one `<|image|>` token.
* Text is tokenized chunk by chunk between `<|image|>` tokens, as the original does; rows are left-padded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_mplug_owl3 import IMAGE_TOKEN, placeholder_text

Message = dict  # {"role": str, "content": str}


def render_chat(messages: Sequence[Message]) -> str:
    """ChatML text of a conversation, as the original processor renders it."""
    messages = list(messages)
    for message in messages:
        if not isinstance(message, dict) or not {"role", "content"} <= set(message):
            raise ValueError(f"each message must be a dict with 'role' and 'content', got {message!r}")
    if not messages or messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": ""})
    text = ""
    for index, message in enumerate(messages):
        is_generation_prompt = index == len(messages) - 1 and message["role"] == "assistant" and not message["content"]
        text += f"<|im_start|>{message['role']}\n{message['content']}"
        text += "" if is_generation_prompt else "<|im_end|>\n"
    return text


class MplugOwl3Processor(ProcessorMixin):
    r"""
    Builds model inputs from conversations (or already rendered prompts) and images.

    Returns `input_ids` and `attention_mask` (batch, length), left-padded, `pixel_values` (tiles, 3, S, S) in prompt
    order across the batch, and `image_grids` (images, 2).
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)
        self.image_token = IMAGE_TOKEN
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {IMAGE_TOKEN} token; mPLUG-Owl3 needs it as a single token")

    def __call__(
        self,
        messages: Sequence[Message] | Sequence[Sequence[Message]] | None = None,
        images=None,
        text: str | Sequence[str] | None = None,
        cut_enable: bool = True,
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        """`messages`: one conversation or a list of them; or `text`: rendered prompt(s). `images`: the images of
        one sample in `<|image|>` order, or one such list per sample."""
        if (messages is None) == (text is None):
            raise ValueError("pass exactly one of `messages` (conversations) or `text` (rendered prompts)")
        if messages is not None:
            conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
            texts = [render_chat(conversation) for conversation in conversations]
        else:
            texts = [text] if isinstance(text, str) else list(text)
        per_sample_images = self._group_images(images, len(texts))

        all_images = [image for sample in per_sample_images for image in sample]
        grids = iter([])
        pixel_values = image_grids = None
        if all_images:
            encoded = self.image_processor(all_images, cut_enable=cut_enable, return_tensors="pt")
            pixel_values, image_grids = encoded["pixel_values"], encoded["image_grids"]
            grids = iter(image_grids.tolist())

        rows = []
        for index, (prompt, sample_images) in enumerate(zip(texts, per_sample_images)):
            chunks = prompt.split(IMAGE_TOKEN)
            if len(chunks) - 1 != len(sample_images):
                raise ValueError(
                    f"sample {index}: the prompt has {len(chunks) - 1} {IMAGE_TOKEN} placeholders but "
                    f"{len(sample_images)} images were given"
                )
            expanded = chunks[0]
            for chunk in chunks[1:]:
                expanded += placeholder_text(*next(grids)) + chunk
            rows.append(self._tokenize(expanded))

        length = max(len(row) for row in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for index, row in enumerate(rows):
            input_ids[index, length - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[index, length - len(row) :] = 1
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if pixel_values is not None:
            data.update(pixel_values=pixel_values, image_grids=image_grids)
        return BatchFeature(data, tensor_type=return_tensors)

    def _tokenize(self, text: str) -> list[int]:
        """Tokenize each chunk between `<|image|>` tokens separately, as the original processor does."""
        ids: list[int] = []
        for index, chunk in enumerate(text.split(IMAGE_TOKEN)):
            if index:
                ids.append(self.image_token_id)
            if chunk:
                ids.extend(self.tokenizer(chunk, add_special_tokens=False)["input_ids"])
        return ids

    @staticmethod
    def _group_images(images, num_samples: int) -> list[list]:
        if images is None:
            return [[] for _ in range(num_samples)]
        if not isinstance(images, (list, tuple)):
            images = [images]
        nested = len(images) > 0 and all(isinstance(item, (list, tuple)) for item in images)
        if num_samples == 1 and not nested:
            return [list(images)]
        if not nested or len(images) != num_samples:
            raise ValueError(
                f"for {num_samples} prompts pass `images` as {num_samples} lists (one per prompt, possibly empty)"
            )
        return [list(sample) for sample in images]


__all__ = ["MplugOwl3Processor", "render_chat"]
