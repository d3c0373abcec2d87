"""The model card of an exported folder: what was exported, how it was checked, and how to use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# what scoring an export needs besides hf_iqa itself (README, "Scoring without PyTorch"; .ci/run installs the same)
RUNTIME_REQUIREMENTS = (
    '"onnxruntime>=1.32"', '"transformers>=5.23,<6"', '"huggingface_hub>=1.31"', '"numpy>=2.0"', '"pillow>=10.1"',
    '"tqdm>=4.66.3"', '"filelock>=3.12"', '"safetensors>=0.8"',
)  # fmt: skip


def write_card(path: Path, spec: dict[str, Any], config: Any) -> None:
    parity = spec["parity"]
    lines = [
        f"# {spec.get('source') or spec['family']} (ONNX, {spec['precision']})",
        "",
        "## ONNX export",
        "",
        f"Exported by `hf-iqa export onnx` from `{spec.get('source') or spec['family']}` "
        f"(family `{spec['family']}`), opset {spec['opset']}, standard operators only.",
        f"Inputs: {', '.join(f'`{name}`' for name in spec['inputs'])} (the image processor's outputs, "
        "`preprocessor_config.json`); outputs: " + ", ".join(f"`{name}`" for name in spec["outputs"]) + ".",
        f"Score range: {list(getattr(config, 'score_range', []) or [])}, higher is better.",
        "",
        f"Parity (fp32 graph vs PyTorch): max |difference| {parity['max_abs_difference']:.2e} over every score and "
        f"probability of {parity['images']} images of varied sizes (bound {parity['atol']}).",
    ]
    variant = spec.get("variant")
    if variant:
        lines += [
            "",
            f"Variant `{variant['precision']}` vs the fp32 graph on {variant['images']} degraded images: "
            f"max |Δ score| {variant['max_abs_difference']:.4f}, SRCC {variant['srcc']:.4f} "
            f"(saved because SRCC >= {variant['bounds']['min_srcc']} and max |Δ| <= "
            f"{variant['bounds']['max_abs']} x the score range).",
        ]
    lines += [
        "",
        "## Use without PyTorch",
        "",
        "```bash",
        "pip install --no-deps hf-iqa   # hf_iqa without torch (pip warns that torch and scipy are missing)",
        "pip install " + " ".join(RUNTIME_REQUIREMENTS),
        "hf-iqa score --model THIS_FOLDER photos/ -o scores.csv",
        "```",
        "",
        "```python",
        "import hf_iqa",
        'pipe = hf_iqa.pipeline(model="THIS_FOLDER")  # an OnnxImageQualityPipeline',
        'print(pipe("photo.jpg"))',
        "```",
    ]
    path.write_text("\n".join(lines) + "\n")
