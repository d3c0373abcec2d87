"""Facts of OpenAI CLIP that training, conversion and data all use: the image normalisation, the text context
length and the exact CLIP tokenizer, built offline from the BPE file shipped with this package. Imports only the
standard library at module level, so any layer may import it."""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"  # OpenAI CLIP's BPE merges (MIT licence), shipped as package data
CONTEXT_LENGTH = 77  # tokens per prompt, start and end of text included
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # per-channel RGB mean of OpenAI CLIP's image normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table (a fact of the BPE format)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The exact OpenAI CLIP vocabulary (49 408 entries) and merges, from the BPE file in this package."""
    with resources.files("hf_iqa").joinpath(BPE_FILE).open("rb") as handle:
        lines = gzip.decompress(handle.read()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab_list)}, merges


def build_clip_tokenizer(save_directory: str | Path | None = None):
    """A transformers `CLIPTokenizer` with OpenAI's exact ids, built offline. Optionally saved to a folder.

    Note: `CLIPTokenizer(vocab_file=..., merges_file=...)` silently ignores both arguments in transformers 5;
    writing vocab.json + merges.txt and calling `from_pretrained` is the reliable route.
    """
    import tempfile

    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_text = "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
        (Path(tmp) / "merges.txt").write_text(merges_text, encoding="utf-8")
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=CONTEXT_LENGTH)
    if save_directory is not None:
        tokenizer.save_pretrained(str(save_directory))
    return tokenizer
