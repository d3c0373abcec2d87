"""Helpers for the mPLUG-Owl3 golden fixture `mplug_owl3_tiny/`, looked up in $HF_IQA_FIXTURES, `tests/fixtures/`,
then `/work/shared/fixtures/`.

The fixture holds tiny random weights in the published key layout, inputs built by the original processor and the
outputs of the original remote code under transformers 4.44 (see its README.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

from tests.testing_utils import FIXTURES_DIR


def _fixture_dir() -> Path:
    candidates = [os.environ.get("HF_IQA_FIXTURES"), FIXTURES_DIR, "/work/shared/fixtures"]
    for base in filter(None, candidates):
        if (Path(base) / "mplug_owl3_tiny" / "README.md").is_file():
            return Path(base) / "mplug_owl3_tiny"
    raise FileNotFoundError(f"mplug_owl3_tiny golden fixture not found in any of {candidates}")


FIXTURE_DIR = _fixture_dir()
IMAGE_TOKEN_ID = 259  # <|image|> in the fixture's byte tokenizer
PILLOW_MAJOR = int(PIL.__version__.split(".")[0])


def read_json(name: str) -> dict:
    return json.loads((FIXTURE_DIR / name).read_text())


def byte_tokenizer():
    """The fixture's tokenizer-free id rule as a real tokenizer: every UTF-8 byte is one token whose id is its rank
    in the GPT-2/Qwen2 byte order (`inputs.json` -> tokenizer.byte_to_id), plus the four special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    table = read_json("inputs.json")["tokenizer"]
    # byte-level pre-tokenizers write byte b as chr(b) if printable, else as chr(256 + n) in increasing byte order
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    extra = iter(range(256, 512))
    char = {byte: chr(byte) if byte in printable else chr(next(extra)) for byte in range(256)}
    vocab = {char[int(byte)]: token_id for byte, token_id in table["byte_to_id"].items()}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    tokenizer.add_special_tokens({"additional_special_tokens": list(table["special_tokens"])})
    assert tokenizer.convert_tokens_to_ids(list(table["special_tokens"])) == list(table["special_tokens"].values())
    return tokenizer


def tiles_from_png(name: str) -> torch.Tensor:
    """A processor-tiles strip (uint8, tiles side by side) -> the original's float32 `pixel_values`, bit for bit."""
    strip = torch.from_numpy(np.asarray(Image.open(FIXTURE_DIR / name).convert("RGB")).copy()).permute(2, 0, 1)
    side = strip.shape[1]
    tiles = torch.stack([strip[:, :, side * i : side * (i + 1)] for i in range(strip.shape[2] // side)])
    return (tiles.float() / 255 - 0.5) / 0.5
