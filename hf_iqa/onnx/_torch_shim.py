"""A stand-in for the two torch calls hf_iqa's image processors make when torch is not installed.

The image-processing files are Hub units that `import torch` at module level; with onnxruntime only, they are
executed with this module bound to the name `torch` (see `processors.py`), never installed in `sys.modules`.
What it reproduces exactly: `torch.Generator().manual_seed(s)` and `torch.randint(low, high, (1,), generator=g)`
(UniQA's seeded crop positions). torch's CPU generator is a 32-bit Mersenne Twister seeded like numpy's legacy
`RandomState(seed)`, and for ranges under 2**32 `randint` is `low + next_uint32 % (high - low)`;
tests/onnx/test_torch_free.py checks the equality against torch. Anything else raises.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Generator:
    def __init__(self) -> None:
        self._state = np.random.RandomState(0)

    def manual_seed(self, seed: int) -> Generator:
        self._state = np.random.RandomState(int(seed) & 0xFFFFFFFF)
        return self

    def next_uint32(self) -> int:
        return int(self._state.randint(0, 2**32, dtype=np.uint64))


class Tensor:
    """The int64 values `randint` drew; `int()` of a one-element one, like a torch tensor (numpy 2 refuses)."""

    def __init__(self, values: np.ndarray):
        self.values = values

    def __int__(self) -> int:
        return int(self.values.item())

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)


def randint(low: int, high: int, size: tuple[int, ...], *, generator: Generator) -> Tensor:
    span = int(high) - int(low)
    if span <= 0 or span >= 2**32:
        raise ValueError(f"randint range [{low}, {high}) is not supported without torch")
    count = int(np.prod(size))
    drawn = [int(low) + generator.next_uint32() % span for _ in range(count)]
    return Tensor(np.array(drawn, dtype=np.int64).reshape(size))


def __getattr__(name: str) -> Any:
    raise RuntimeError(f"torch.{name} is needed here, but torch is not installed (hf_iqa.onnx runs without it)")
