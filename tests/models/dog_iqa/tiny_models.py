"""Tiny random sub-models for the Dog-IQA tests: a SAM2, a Qwen2-VL and an Idefics3 built
from configs, and a byte-level tokenizer (every byte one token, so the digits 1-7 are single tokens) built with
`tokenizers`. Nothing is downloaded. `save_tiny_models(root)` writes them as Hub-like folders."""

from __future__ import annotations

import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Sam2Config,
    Sam2Model,
)

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
IDEFICS_SPECIALS = ["<|begin_of_text|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"]
IDEFICS_SPECIALS += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]

# Idefics3's real chat template (a fact of the released processor config), to exercise the chat-template path.
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS[1:] + IDEFICS_SPECIALS})
    tokenizer.padding_side = "left"
    return tokenizer


def boost_digits(model, tokenizer, factor: float = 20.0) -> None:
    """Scale the lm_head rows of the digits 1-7 so greedy decoding picks a digit (spec §12)."""
    ids = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(1, 8)]
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight[ids] *= factor


def tiny_sam2(seed: int = 0) -> Sam2Model:
    """128 x 128 input, 4 Hiera stages (the global block is not the first block of a pooling stage); the mask
    hypernetworks are scaled so the random logits span several units (otherwise every stability score is 0)."""
    torch.manual_seed(seed)
    backbone = dict(
        model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1, image_size=[128, 128],
        blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[3], window_positional_embedding_background_size=[2, 2],
    )  # fmt: skip
    config = Sam2Config(
        vision_config=dict(
            backbone_config=backbone,
            backbone_channel_list=[64, 32, 16, 8],
            backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
            fpn_hidden_size=32,
        ),  # fmt: skip
        prompt_encoder_config=dict(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=8),
        mask_decoder_config=dict(
            hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=32
        ),
    )
    model = Sam2Model(config).eval()
    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight.mul_(4e5)
            mlp.proj_out.bias.mul_(4e5)
    return model


def tiny_qwen2_vl(tokenizer, seed: int = 0) -> Qwen2VLForConditionalGeneration:
    torch.manual_seed(seed)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|endoftext|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}  # fmt: skip
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
            eos_token_id=tokenizer.pad_token_id,
        ),  # fmt: skip
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2),
        **ids,
    )
    model = Qwen2VLForConditionalGeneration(config).eval()
    boost_digits(model, tokenizer)
    return model


def tiny_qwen2_vl_image_processor() -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 2, max_pixels=28 * 28 * 12)


def tiny_idefics3(tokenizer, seed: int = 0) -> Idefics3ForConditionalGeneration:
    torch.manual_seed(seed)
    config = Idefics3Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            pad_token_id=tokenizer.pad_token_id,
            max_position_embeddings=4096,
        ),  # fmt: skip
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Idefics3ForConditionalGeneration(config).eval()
    boost_digits(model, tokenizer)
    return model


def tiny_idefics3_image_processor() -> Idefics3ImageProcessorPil:
    return Idefics3ImageProcessorPil(size={"longest_edge": 56}, max_image_size={"longest_edge": 28})


def save_tiny_models(root: str, families: tuple[str, ...] = ("qwen2_vl", "idefics3")) -> dict[str, str]:
    """Write the tiny SAM2 and MLLM folders under `root`; returns {name: path}."""
    paths = {"sam2": os.path.join(root, "sam2")}
    tiny_sam2().save_pretrained(paths["sam2"])
    for family in families:
        path = os.path.join(root, family)
        tokenizer = tiny_tokenizer()
        if family == "qwen2_vl":
            model, processor = tiny_qwen2_vl(tokenizer), tiny_qwen2_vl_image_processor()
        else:
            model, processor = tiny_idefics3(tokenizer), tiny_idefics3_image_processor()
            tokenizer.chat_template = IDEFICS3_CHAT_TEMPLATE
        model.save_pretrained(path)
        processor.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths[family] = path
    return paths
