"""The one switch for hf_iqa's progress display (conversion stages, first-use downloads, training bars).

`HF_IQA_NO_PROGRESS` hides progress when set to anything but an "off" word: unset, empty, `0`, `false`, `no` and
`off` (any case, surrounding blanks ignored) leave progress on; `1`, `true`, `yes`, `on` and any other value hide
it. An explicit `progress=True/False` argument wins over the environment. No torch, no transformers here."""

from __future__ import annotations

import os

NO_PROGRESS_ENV = "HF_IQA_NO_PROGRESS"
PROGRESS_ON_WORDS = frozenset({"", "0", "false", "no", "off"})  # values of HF_IQA_NO_PROGRESS that keep progress on


def progress_enabled(progress: bool | None = None) -> bool:
    """`progress` when given, else on unless HF_IQA_NO_PROGRESS holds a word other than those in PROGRESS_ON_WORDS."""
    if progress is not None:
        return bool(progress)
    return os.environ.get(NO_PROGRESS_ENV, "").strip().lower() in PROGRESS_ON_WORDS
