"""Model throughput sweep for an accelerator (issue 10's GPU item): images/s, peak memory and the fraction of the
device's matmul peak, per model, dtype and batch size, with every ratio measured in the same run.

For each model (real-size shapes, random weights, loaded as users do with `from_pretrained(dtype=...)`):
- images/s of the model forward on already preprocessed inputs (LIQE: 15 windows of 224; QualiCLIP: 512x384 at
  native resolution; UniQA ViT-B/16: 10 crops of 224), for each batch size;
- peak device memory (CUDA: `max_memory_allocated`; CPU: peak RSS of the process so far);
- achieved TFLOP/s = FLOPs per image (counted once with `torch.utils.flop_counter` on the plain path) x images/s,
  and its fraction of this device's matmul throughput in that dtype, measured here on a large square GEMM;
- max |score difference| of the batch against the fp32 model on the same inputs.

    python bench/bench_gpu.py --device cuda                                   # all models, fp16 + bf16, batch 1-64
    python bench/bench_gpu.py --device cpu --dtypes bfloat16 --batch-sizes 1 2 --models liqe   # smoke test
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch
from common import peak_rss_mb
from torch.utils.flop_counter import FlopCounterMode


def build(name: str):
    """(fp32 model, a function batch_size -> model inputs) for a real-size random model."""
    torch.manual_seed(0)
    if name == "liqe":
        from transformers import CLIPConfig

        from hf_iqa.models.liqe import LiqeConfig, LiqeModel

        clip = CLIPConfig(
            text_config={"hidden_act": "quick_gelu", "eos_token_id": 49407},
            vision_config={"hidden_act": "quick_gelu", "patch_size": 32},
            logit_scale_init_value=math.log(100.0),
        )
        model = LiqeModel(LiqeConfig(clip_config=clip))
        with torch.no_grad():
            model.prompt_text_features.copy_(
                torch.nn.functional.normalize(torch.randn_like(model.prompt_text_features), dim=-1)
            )
        return model, lambda batch: {"pixel_values": torch.randn(batch, 15, 3, 224, 224)}
    if name == "qualiclip":
        from hf_iqa.models.qualiclip import QualiClipConfig, QualiClipModel

        model = QualiClipModel(QualiClipConfig())
        with torch.no_grad():
            features = model.prompt_text_features
            features.copy_(torch.nn.functional.normalize(torch.randn_like(features), dim=-1))
        return model, lambda batch: {"pixel_values": torch.randn(batch, 3, 384, 512)}
    if name == "uniqa":
        from hf_iqa.models.uniqa import UniQaConfig, UniQaModel

        model = UniQaModel(UniQaConfig())
        with torch.no_grad():
            features = model.heads["quality"].prompt_text_features
            features.copy_(torch.nn.functional.normalize(torch.randn_like(features), dim=-1))
        return model, lambda batch: {"pixel_values": torch.randn(batch, 10, 3, 224, 224)}
    raise SystemExit(f"unknown model {name!r}; choose from liqe, qualiclip, uniqa")


def flops_per_image(model, inputs) -> float:
    """FLOPs of one image on the plain path (autograd on, so the reference forward runs), counted by PyTorch."""
    one = {key: value[:1] for key, value in inputs.items()}
    with FlopCounterMode(display=False) as counter:
        model(**one)
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """TFLOP/s of the best of a few large square matmuls in `dtype` on `device`."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = math.inf
    for _ in range(5):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["liqe", "qualiclip", "uniqa"])
    parser.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 16, 64])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per configuration (at least)")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device {name}, torch {torch.__version__}")
    peaks = {dtype: matmul_peak(device, getattr(torch, dtype)) for dtype in args.dtypes}
    print("matmul peak (measured): " + ", ".join(f"{d} {p:.1f} TFLOP/s" for d, p in peaks.items()))
    print(f"{'model':>10} {'dtype':>9} {'batch':>5} | {'img/s':>8} {'peak MB':>8} | {'TFLOP/s':>7} {'of peak':>7} "
          f"| {'max|Δscore| vs fp32':>19}")  # fmt: skip
    for model_name in args.models:
        reference, make_inputs = build(model_name)
        probe = make_inputs(max(args.batch_sizes))
        flops = flops_per_image(reference.eval(), probe)
        reference = reference.to(device)
        with torch.inference_mode():
            expected = reference(**{k: v.to(device) for k, v in probe.items()}).scores.float()
        with tempfile.TemporaryDirectory() as folder:
            reference.save_pretrained(folder)
            del reference
            for dtype in args.dtypes:
                model = load(folder, getattr(torch, dtype), device)
                for batch in args.batch_sizes:
                    inputs = {k: v[:batch].to(device, getattr(torch, dtype)) for k, v in probe.items()}
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    with torch.inference_mode():
                        scores = model(**inputs).scores.float()  # warm-up (and the scores to compare)
                        model(**inputs)
                        synchronize(device)
                        runs, start = 0, time.perf_counter()
                        while time.perf_counter() - start < args.seconds:
                            model(**inputs)
                            runs += 1
                        synchronize(device)
                        elapsed = time.perf_counter() - start
                    rate = runs * batch / elapsed
                    achieved = flops * rate / 1e12
                    delta = (scores - expected[:batch]).abs().max().item()
                    print(f"{model_name:>10} {dtype:>9} {batch:>5} | {rate:>8.1f} {peak_memory_mb(device):>8.0f} | "
                          f"{achieved:>7.2f} {achieved / peaks[dtype]:>7.1%} | {delta:>19.2e}", flush=True)  # fmt: skip
                del model
    print("TFLOP/s = FLOPs per image of the plain path x images/s: the fast path skips some of them (the ViT's last"
          " layer beyond the class token), so for LIQE and UniQA this is the plain-path-equivalent rate; peak MB on"
          " CPU is the process's peak RSS so far")  # fmt: skip


def load(folder: str, dtype: torch.dtype, device: torch.device):
    """As users load: the Auto class with `dtype=` (tensors the model keeps in fp32 stay fp32)."""
    from transformers import AutoModel

    import hf_iqa  # noqa: F401  (registers the model types with the Auto classes)

    return AutoModel.from_pretrained(folder, dtype=dtype).to(device).eval()


if __name__ == "__main__":
    main()
