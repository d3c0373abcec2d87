"""LIQE's label vocabulary, shared by the datasets loaders and the training recipes (importable without
`datasets`). Facts from LIQE's training script (`train_unique_clip_weight.py`): the 9 scenes and the 11 coarse
distortion classes of its prompts (the same lists as the LIQE model config), and the map from the 33 fine
distortion names of its split files to those 11 classes."""

from hf_iqa.models.liqe.configuration_liqe import DISTORTIONS, SCENES

LIQE_SCENES = tuple(SCENES)
LIQE_DISTORTIONS = tuple(DISTORTIONS)
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
