"""LIQE's label vocabulary, shared by the dataset loaders and the training recipes. Facts from LIQE's training
script (`train_unique_clip_weight.py`): the 9 scenes and the 11 coarse distortion classes of its prompts, and the
map from the 33 fine distortion names of its split files to those 11 classes.

Data-side on purpose: it imports nothing (no model, no `datasets`), so loaders and recipes can use it without
loading a model. The LIQE model config keeps its own copy of the two lists as its defaults (a model folder is a Hub
unit that imports nothing from hf_iqa); `tests/test_data.py` checks that the copies agree.
"""

LIQE_SCENES = ("animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still_life", "others")
LIQE_DISTORTIONS = (
    "jpeg2000 compression", "jpeg compression", "noise", "blur", "color", "contrast", "overexposure",
    "underexposure", "spatial", "quantization", "other",
)  # fmt: skip
LIQE_FINE_TO_COARSE = {
    "jpeg2000 compression": "jpeg2000 compression", "jpeg compression": "jpeg compression", "white noise": "noise",
    "gaussian blur": "blur", "fastfading": "jpeg2000 compression", "fnoise": "noise", "contrast": "contrast",
    "lens": "blur", "motion": "blur", "diffusion": "color", "shifting": "blur", "color quantization": "quantization",
    "oversaturation": "color", "desaturation": "color", "white with color": "noise", "impulse": "noise",
    "multiplicative": "noise", "white noise with denoise": "noise", "brighten": "overexposure",
    "darken": "underexposure", "shifting the mean": "other", "jitter": "spatial", "noneccentricity patch": "spatial",
    "pixelate": "spatial", "quantization": "quantization", "color blocking": "spatial", "sharpness": "contrast",
    "realistic blur": "blur", "realistic noise": "noise", "underexposure": "underexposure",
    "overexposure": "overexposure", "realistic contrast change": "contrast", "other realistic": "other",
}  # fmt: skip


def decode_liqe_distortion(fine: str) -> int:
    """Index into `LIQE_DISTORTIONS` of one of the fine distortion names of LIQE's split files."""
    fine = fine.strip()
    if fine not in LIQE_FINE_TO_COARSE:
        raise ValueError(f"unknown LIQE distortion {fine!r}; known: {sorted(LIQE_FINE_TO_COARSE)}")
    return LIQE_DISTORTIONS.index(LIQE_FINE_TO_COARSE[fine])


def decode_liqe_scenes(words) -> tuple[int, ...]:
    """Multi-hot over `LIQE_SCENES` of a split file's scene words (`invalid` and empty words name no scene)."""
    names = {word.strip() for word in words} - {"invalid", ""}
    unknown = names - set(LIQE_SCENES)
    if unknown:
        raise ValueError(f"unknown LIQE scene(s) {sorted(unknown)}; known: {list(LIQE_SCENES)}")
    return tuple(int(scene in names) for scene in LIQE_SCENES)
