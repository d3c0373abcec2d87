"""QualiCLIP's inference speed-ups, kept out of `modeling_qualiclip.py` so that it reads as the plain model.

- `conv_batch_norm`: each convolution + BatchNorm pair of the ResNet tower as one convolution whose weights absorb
  the BatchNorm, cached between calls (same result to float rounding, one memory pass fewer);
- `own_unconverted_tensors`: after `from_pretrained(dtype=...)`, gives the tensors kept in fp32 memory of their own,
  so the checkpoint's memory map is released.

A Hub remote-code file like the modeling file that imports it (torch only). UniQA carries copies (`# Copied from`
markers, checked by `utils/check_copies.py`); edit the originals here (`own_unconverted_tensors`: in fast_liqe.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fold_batch_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the one convolution equal to `norm(conv(x))` with the running statistics."""
    scale = norm.weight.float() * torch.rsqrt(norm.running_var.float() + norm.eps)
    weight = (conv.weight.float() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype)
    bias = (norm.bias.float() - norm.running_mean.float() * scale).to(conv.weight.dtype)
    return weight, bias


def conv_batch_norm(x: torch.Tensor, conv: nn.Conv2d, norm: nn.BatchNorm2d, fold: bool) -> torch.Tensor:
    """`norm(conv(x))`. In eval mode with `fold`, one convolution whose weights absorb the BatchNorm.

    Without gradients the folded weights are cached on the BatchNorm module, keyed by the storage and version
    counter of every tensor they come from, so an in-place update (`load_state_dict`, an optimiser step), a
    `.to(dtype/device)` or new statistics all refold; the state dict keeps the original layout. With gradients
    they are folded on the fly so that the gradients reach the original parameters.
    """
    if not fold or norm.training:
        return norm(conv(x))
    sources = (conv.weight, norm.weight, norm.bias, norm.running_mean, norm.running_var)
    if torch.is_grad_enabled() or any(t.is_inference() for t in sources):
        weight, bias = fold_batch_norm(conv, norm)
    else:
        key = (norm.eps, x.is_contiguous(memory_format=torch.channels_last)) + tuple(
            (t.data_ptr(), t._version, t.dtype, t.device) for t in sources
        )
        cached = norm.__dict__.get("_folded_conv")
        if cached is None or cached[0] != key:
            with torch.inference_mode():
                weight, bias = fold_batch_norm(conv, norm)
                if key[1]:  # weights in the activations' layout: no reordering at every call
                    weight = weight.contiguous(memory_format=torch.channels_last)
            cached = norm.__dict__["_folded_conv"] = (key, weight, bias)
        weight, bias = cached[1], cached[2]
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def forget_folded_weights(module: nn.Module) -> None:
    """Drop the folded-weight caches of `module` and its children. Called before `.to()`, `.half()`, `.cuda()`...:
    a round trip such as `.half().float()` could reuse the freed memory, so the storage pointer in the cache key
    would not tell the change."""
    for child in module.modules():
        child.__dict__.pop("_folded_conv", None)


# Copied from hf_iqa.models.liqe.fast_liqe.own_unconverted_tensors
def own_unconverted_tensors(model: torch.nn.Module) -> None:
    """Give the tensors that `from_pretrained(dtype=...)` did not convert (kept in fp32, integer buffers) memory of
    their own. As loaded they are views into the checkpoint's memory map, which then stays resident although every
    other weight was copied (+580 MB for LIQE loaded in bf16)."""
    numel: dict[torch.dtype, int] = {}
    for parameter in model.parameters():
        numel[parameter.dtype] = numel.get(parameter.dtype, 0) + parameter.numel()
    bulk = max(numel, key=numel.get)  # the dtype the weights were loaded in
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.dtype == bulk or tensor.device.type != "cpu":
                continue
            owner, _, attr = name.rpartition(".")
            module = model.get_submodule(owner)
            if isinstance(tensor, torch.nn.Parameter):
                setattr(module, attr, torch.nn.Parameter(tensor.clone(), requires_grad=tensor.requires_grad))
            else:
                module.register_buffer(attr, tensor.clone(), persistent=attr not in module._non_persistent_buffers_set)


__all__ = ["conv_batch_norm", "forget_folded_weights", "own_unconverted_tensors"]
