"""hf_iqa against pyiqa from PyPI on the same random weights: LIQE (mix) and QualiCLIP, pyiqa's protocol, end to end.

Not speed: a peer check. pyiqa needs torchvision, which cannot load beside the CPU torch of hf_iqa's own
environment, so run this in a separate one (see `--help`):

    python -m venv /tmp/peer && /tmp/peer/bin/pip install torch==2.14.1 torchvision==0.29.1 pyiqa scikit-image \
        && /tmp/peer/bin/pip install -e ".[test]"
    HF_HUB_OFFLINE=1 /tmp/peer/bin/python bench/peer_pyiqa.py

LIQE: one random OpenAI-layout ViT-B/32 CLIP is written as pyiqa's `liqe_mix.pt` (`{'params': {'clip_model.' +
key}}`). pyiqa builds its LIQE from it (its CLIP loader pointed at the same weights instead of the download; its own
tokenizer and 495 prompts), reads each photo with its own reader (`imread2tensor`) and scores it with `LIQE.forward`.
hf_iqa converts the same file with `hf-iqa convert liqe --protocol pyiqa` (its converter encodes the prompts itself)
and scores the same files with `hf_iqa.pipeline`. QualiCLIP: the same with a random RN50 CLIP (random BatchNorm
statistics) and 14 random prompt features written as `QualiCLIP.pth`, pyiqa's `QualiCLIP(model_type="qualiclip")`
(temperature 2) against `hf-iqa convert qualiclip --protocol pyiqa`. Printed: per photo both scores, and the
largest difference per model. The photos include one JPEG with EXIF orientation 6: hf_iqa reads it as
`hf-iqa benchmark` does (`exif_transpose=False`, the stored pixels), which is how pyiqa reads it.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def compare(label: str, theirs, pipe, photos: list[Path], read) -> None:
    """Both scores per photo: pyiqa's arch on its own reading of the file, hf_iqa's pipeline on the file."""
    import torch

    worst = 0.0
    for path in photos:
        with torch.no_grad():
            their_score = float(theirs(read(str(path), rgb=True)[None]).squeeze())
        our_score = pipe(str(path), exif_transpose=False)["score"]  # as hf-iqa benchmark reads: stored pixels
        worst = max(worst, abs(our_score - their_score))
        print(f"{path.stem:22s} pyiqa {their_score:.7f}  hf_iqa {our_score:.7f}  |diff| {abs(our_score - their_score):.2e}")
    print(f"{label}, pyiqa protocol, same random weights: max |diff| {worst:.2e} over {len(photos)} photos\n")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="peer_pyiqa_"))
    os.environ["TORCH_HOME"] = str(work / "torch_home")  # pyiqa's caches (its prompt features) start empty here
    (work / "torch_home" / "hub" / "pyiqa").mkdir(parents=True)
    import numpy as np
    import pyiqa.archs.liqe_arch as liqe_arch
    import pyiqa.archs.qualiclip_arch as qualiclip_arch
    import torch
    from PIL import Image
    from pyiqa.archs.clip_model import CLIP, build_model
    from pyiqa.utils.img_util import imread2tensor
    from skimage import data

    import hf_iqa
    from hf_iqa.converters.liqe import convert
    from hf_iqa.converters.qualiclip import convert as qualiclip_convert

    torch.manual_seed(0)
    clip = CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12).float()  # ViT-B/32, random, fp32
    state = {key: value.float() for key, value in clip.state_dict().items()}
    state["logit_scale"] = torch.tensor(math.log(100.0))
    torch.save({"params": {f"clip_model.{key}": value for key, value in state.items()}}, work / "liqe_mix.pt")

    # pyiqa's CLIP loader, pointed at our weights instead of the download: what its `load` does with a state dict
    # on CPU (build_model, which rounds through fp16, then .float(); LIQE's checkpoint then restores fp32 weights)
    liqe_arch.load = lambda name, device: build_model(dict(state)).float()
    theirs = liqe_arch.LIQE(pretrained="mix", pretrained_model_path=str(work / "liqe_mix.pt")).eval()
    convert(work / "liqe_mix.pt", "mix", work / "hf_liqe", protocol="pyiqa", progress=False)
    pipe = hf_iqa.pipeline(model=str(work / "hf_liqe"))

    photos = []
    for name in PHOTOS:
        photos.append(work / f"{name}.png")
        Image.fromarray(np.ascontiguousarray(getattr(data, name)()[..., :3])).save(photos[-1])
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone photo's tag: shown turned 90 degrees; pyiqa (like the released code) does not turn it
    photos.append(work / "coffee_orientation6.jpg")
    Image.open(photos[1]).save(photos[-1], quality=95, exif=exif.tobytes())
    compare("LIQE mix", theirs, pipe, photos, imread2tensor)

    torch.manual_seed(1)
    rn50 = CLIP(1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12).float()
    with torch.no_grad():
        for norm in rn50.modules():
            if isinstance(norm, torch.nn.BatchNorm2d):
                norm.weight.uniform_(0.5, 1.5), norm.bias.normal_(0, 0.1)
                norm.running_mean.normal_(0, 0.1), norm.running_var.uniform_(0.5, 2.0)
    rn50_state = {key: value.float() for key, value in rn50.state_dict().items()}
    rn50_state["logit_scale"] = torch.tensor(math.log(100.0))  # as OpenAI's RN50 (pyiqa's scale: 100 / 2)
    features = torch.nn.functional.normalize(torch.randn(14, 1024), dim=-1)
    qualiclip_file = work / "QualiCLIP.pth"
    torch.save({**{f"clip_model.{k}": v for k, v in rn50_state.items()}, "prompts_features": features}, qualiclip_file)
    qualiclip_arch.load = lambda name, device: build_model(dict(rn50_state)).float()
    qualiclip_arch.load_file_from_url = lambda url, *args, **kwargs: str(qualiclip_file)
    theirs = qualiclip_arch.QualiCLIP(model_type="qualiclip").eval()
    qualiclip_convert(qualiclip_file, work / "hf_qualiclip", protocol="pyiqa", progress=False)
    compare("QualiCLIP", theirs, hf_iqa.pipeline(model=str(work / "hf_qualiclip")), photos, imread2tensor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
