"""Train LIQE (Zhang et al., CVPR 2023, arXiv 2303.14968): the multitask recipe and the quality-only variant.

    accelerate launch -m hf_iqa.training.liqe --config examples/training/liqe_multitask.yaml
    hf-iqa train liqe --config examples/training/liqe_koniq.yaml

Multitask (the `LIQE.pt` / `liqe_mix` recipe, liqe.md §9.1). Every optimizer step draws one sub-batch from **each**
dataset (its own `batch_size`; each dataset's stream of shuffled images restarts independently). Each image is
flipped horizontally with probability 1/2 and gives `num_train_patches` (3) random 224 windows of the protocol's
grid (`LiqeImageProcessor(patch_sampling="random")`); the window logits are averaged, then one softmax over the
5 x 9 x 11 prompts. The whole CLIP trains, both towers (the prompts are re-encoded from `input_ids` at every step),
except `logit_scale`. Losses (no cross-entropy anywhere), eps = 1e-8:

- quality: pairwise fidelity within each dataset's sub-batch on the expected score s:
  p = Phi((s_i - s_j) / sqrt 2), g = [mos_i > mos_j] (1/2 when equal), 1 - sqrt(p g + eps) - sqrt((1-p)(1-g) + eps),
  averaged over pairs, then over datasets;
- distortion: 1 - sum_k sqrt(p_k g_k + eps) on the 11-way marginal against the one-hot label (33 -> 11 map);
- scene: mean over the 9 scenes of the binary fidelity on the scene marginal against the multi-hot labels.

Images without a distortion or scene label (e.g. a benchmark loaded without LIQE's splits) count for the quality
loss only. The three losses are weighted by Dynamic Weight Average (T = 2): lambda_k = 3 exp(w_k / T) / sum_i
exp(w_i / T) with w_k = L_k(e-1) / L_k(e-2), the epoch means (all processes), lambda = 1 in epochs 0 and 1.

Quality-only (`multitask: false`, the `liqe` KonIQ recipe, §9.2): 5 prompts "a photo with {quality} quality",
the quality loss alone, one dataset (batch 32 in the paper).

Hyperparameters. The paper's (liqe.md §9): AdamW, lr 5e-6, weight decay 1e-3, cosine schedule; 3 train windows,
15 grid windows for validation; per-dataset batches LIVE/CSIQ/BID/CLIVE 4, KonIQ/KADID 16; 200 steps per epoch,
80 epochs (multitask) or 6 (KonIQ-only, batch 32); DWA with T = 2; seed 20200626; best checkpoint by validation
SRCC. Ours, where we deviate or the paper is silent: the default schedule is one cosine decay over `max_steps`;
`lr_scheduler: epoch_cosine` is the original's (`CosineAnnealingLR(T_max=5)` stepped per epoch and never reset, a
cosine with a 10-epoch period, epochs that would run at lr 0 skipped);
training runs in fp32 or bf16 autocast (the original keeps fp16 weights between steps); no gradient clipping;
validation reports each dataset's SRCC/PLCC (`eval/srcc_<name>`) and selects on their mean, as the paper does
(the pooled values are logged as `eval/srcc_pooled`); under several processes each process draws
its own sub-batches, so the effective batch is `num_processes` times larger.

The saved folders (best/, last/) hold `prompt_text_features` recomputed from the trained text tower (padded to 77 tokens
like `LiqeModel.compute_prompt_text_features`), so inference never needs the text tower.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset

from hf_iqa.training.common import ConfigError, SeededDataset, TrainingConfig, TrainingTask, option, run_recipe
from hf_iqa.training.iqa_data import (
    LIQE_SCENES,
    ImageRecord,
    ProcessedImages,
    collate,
    epochs_to_steps,
    has_validation,
    load_records,
    write_card,
)

EPS = 1e-8
TASKS = ("quality", "distortion", "scene")


@dataclass
class LiqeTrainingConfig(TrainingConfig):
    """LIQE training options (see the module docstring); `datasets` is a list of dataset mappings
    (hf_iqa.training.iqa_data), each with its per-step `batch_size`."""

    model_name_or_path: str = option(
        "", help="start from an hf_iqa LIQE folder, or a transformers CLIP folder / Hub id (LIQE's: ViT-B/32)"
    )
    clip_config: dict | None = option(
        None, help="random init from this CLIPConfig mapping instead (no model_name_or_path); tests, ablations"
    )
    multitask: bool = option(True, help="quality x scene x distortion prompts (true) or quality only (false)")
    datasets: list[dict] = option(
        default_factory=list, help="dataset mappings (see hf_iqa.training.iqa_data), each with its batch_size"
    )
    default_batch_size: int = option(16, help="per-dataset sub-batch when a dataset gives no batch_size")
    steps_per_epoch: int = option(200, help="multi-dataset steps in one epoch (the paper's 200)")
    num_epochs: float | None = option(
        None, help="if set, max_steps = num_epochs x steps_per_epoch (per process count)"
    )
    num_train_patches: int = option(3, help="random 224 windows per training image")
    protocol: str = option("official", help="official (adaptive resize 768, stride 48/32) or pyiqa windows")
    use_dwa: bool = option(True, help="weight the three losses by Dynamic Weight Average")
    dwa_temperature: float = option(2.0, help="DWA temperature T")
    train_logit_scale: bool = option(False, help="also train CLIP's logit_scale")
    # the paper's optimisation; TrainingConfig defaults overridden
    learning_rate: float = 5e-6
    weight_decay: float = 1e-3
    lr_scheduler: str = option(
        "cosine",
        help="a transformers scheduler name, or epoch_cosine: the original's CosineAnnealingLR(T_max="
        "cosine_period_epochs) stepped per epoch, never reset, epochs at lr 0 skipped",
    )
    cosine_period_epochs: int = option(5, help="T_max of epoch_cosine, in epochs")
    train_batch_size: int = option(1, help="multi-dataset steps per process per optimizer step (keep 1)")
    max_grad_norm: float | None = None
    seed: int = 20200626

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.datasets:
            raise ConfigError("datasets: give at least one dataset (see hf_iqa.training.iqa_data)")
        if not self.multitask and len(self.datasets) != 1:
            raise ConfigError("multitask: false is the single-dataset quality-only recipe; give exactly one dataset")
        if self.protocol not in ("official", "pyiqa"):
            raise ConfigError(f"protocol must be 'official' or 'pyiqa', got {self.protocol!r}")
        if self.num_train_patches < 1 or self.steps_per_epoch < 1:
            raise ConfigError("num_train_patches and steps_per_epoch must be >= 1")
        if self.cosine_period_epochs < 1:
            raise ConfigError(f"cosine_period_epochs must be >= 1, got {self.cosine_period_epochs}")


# ----------------------------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------------------------


def quality_fidelity_loss(scores: torch.Tensor, mos: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Pairwise fidelity loss on scores, pairs taken within each group (dataset), averaged over groups."""
    losses = []
    for group in torch.unique(groups):
        index = (groups == group).nonzero().flatten()
        if index.numel() < 2:
            continue
        i, j = torch.triu_indices(index.numel(), index.numel(), offset=1, device=scores.device)
        s, m = scores[index], mos[index].to(scores)
        p = 0.5 * (1 + torch.erf((s[i] - s[j]) / 2))  # Phi((s_i - s_j) / sqrt(2))
        g = 0.5 * (torch.sign(m[i] - m[j]) + 1)
        losses.append((1 - torch.sqrt(p * g + EPS) - torch.sqrt((1 - p) * (1 - g) + EPS)).mean())
    return torch.stack(losses).mean() if losses else scores.sum() * 0


def distortion_fidelity_loss(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 - sum_k sqrt(p_k g_k + eps) against one-hot labels; rows with label -1 are ignored."""
    keep = labels >= 0
    if not bool(keep.any()):
        return probs.sum() * 0
    target = torch.nn.functional.one_hot(labels[keep], probs.shape[-1]).to(probs)
    return (1 - torch.sqrt(probs[keep].clamp(0, 1) * target + EPS).sum(dim=-1)).mean()


def scene_fidelity_loss(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary fidelity per scene, averaged over scenes and images; rows of -1 (unlabelled) are ignored."""
    keep = labels[:, 0] >= 0
    if not bool(keep.any()):
        return probs.sum() * 0
    p, g = probs[keep].clamp(0, 1), labels[keep].to(probs)  # a marginal can exceed 1 by rounding
    return (1 - torch.sqrt(p * g + EPS) - torch.sqrt((1 - p) * (1 - g) + EPS)).mean()


class DynamicWeightAverage:
    """Task weights from the ratio of the last two epochs' mean losses (Liu et al., CVPR 2019), as LIQE uses them.

    `update(epoch, losses)` accumulates per-process sums; at the first call of a new epoch the finished epoch's
    means are averaged over processes (`reduce`, a collective every process reaches at the same step). Saved in
    every checkpoint, per process (`TrainingTask.checkpoint_state`), so a resumed run weights its losses exactly as
    the original."""

    def __init__(self, num_tasks: int, temperature: float = 2.0, reduce=None):
        self.num_tasks, self.temperature, self.reduce = num_tasks, temperature, reduce
        self.current_epoch = 0
        self.sums = [0.0] * num_tasks
        self.count = 0
        self.history: dict[int, list[float]] = {}

    def _close_epoch(self) -> None:
        totals = torch.tensor([*self.sums, float(self.count)], dtype=torch.float64)
        if self.reduce is not None:
            totals = self.reduce(totals)
        count = float(totals[-1])
        if count > 0:
            self.history[self.current_epoch] = (totals[:-1] / count).tolist()

    def weights(self, epoch: int) -> list[float]:
        if epoch != self.current_epoch:
            self._close_epoch()
            self.current_epoch, self.sums, self.count = epoch, [0.0] * self.num_tasks, 0
        last, before = self.history.get(epoch - 1), self.history.get(epoch - 2)
        if last is None or before is None:
            return [1.0] * self.num_tasks
        ratios = [a / b if b > 0 else 1.0 for a, b in zip(last, before)]
        exps = [math.exp(r / self.temperature) for r in ratios]
        return [self.num_tasks * e / sum(exps) for e in exps]

    def update(self, values: Sequence[float]) -> None:
        self.sums = [s + float(v) for s, v in zip(self.sums, values)]
        self.count += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "current_epoch": self.current_epoch,
            "sums": list(self.sums),
            "count": self.count,
            "history": {str(k): v for k, v in self.history.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current_epoch, self.sums, self.count = state["current_epoch"], list(state["sums"]), state["count"]
        self.history = {int(k): list(v) for k, v in state["history"].items()}


# ----------------------------------------------------------------------------------------------------------------
# data: one item = one multi-dataset step
# ----------------------------------------------------------------------------------------------------------------


class MultiDatasetSteps(SeededDataset):
    """Item `i` of epoch `e` is one training step: `batch_sizes[d]` images from every dataset d, taken from that
    dataset's endless stream of permutations (permutation c seeded by (seed, d, c)), so each dataset restarts on
    its own and an item depends only on (seed, epoch, i): exact resume, and different steps on each process."""

    def __init__(
        self,
        datasets: Sequence[Sequence[ImageRecord]],
        batch_sizes: Sequence[int],
        steps_per_epoch: int,
        processor,
        num_patches: int,
        seed: int,
    ):
        super().__init__(seed)
        self.datasets, self.batch_sizes = [list(d) for d in datasets], list(batch_sizes)
        self.steps_per_epoch, self.processor, self.num_patches = steps_per_epoch, processor, num_patches
        self._permutations: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return self.steps_per_epoch

    def _permutation(self, dataset: int, cycle: int) -> np.ndarray:
        key = (dataset, cycle)
        if key not in self._permutations:
            if len(self._permutations) > 64:
                self._permutations.clear()
            size = len(self.datasets[dataset])
            self._permutations[key] = np.random.default_rng([self.seed, dataset, cycle]).permutation(size)
        return self._permutations[key]

    def indices(self, dataset: int, index: int) -> list[int]:
        size, batch = len(self.datasets[dataset]), self.batch_sizes[dataset]
        start = (self.epoch * self.steps_per_epoch + index) * batch
        return [int(self._permutation(dataset, p // size)[p % size]) for p in range(start, start + batch)]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self.rng(index)
        pixels, masks, mos, groups, distortions, scenes = [], [], [], [], [], []
        for dataset, records in enumerate(self.datasets):
            for position in self.indices(dataset, index):
                record = records[position]
                image = record.image()
                if rng.random() < 0.5:
                    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                inputs = self.processor(
                    images=image,
                    patch_sampling="random",
                    num_patches=self.num_patches,
                    seed=int(rng.integers(2**31)),
                    return_tensors="pt",
                )
                pixels.append(inputs["pixel_values"][0])
                masks.append(inputs["patch_mask"][0])
                mos.append(record.mos)
                groups.append(dataset)
                distortions.append(record.distortion)
                scenes.append(record.scenes if record.scenes is not None else (-1,) * len(LIQE_SCENES))
        return {
            "pixel_values": torch.stack(pixels),
            "patch_mask": torch.stack(masks),
            "mos": torch.tensor(mos, dtype=torch.float32),
            "dataset": torch.tensor(groups),
            "distortion": torch.tensor(distortions),
            "scenes": torch.tensor(scenes, dtype=torch.float32),
        }


def collate_steps(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Training items (already sub-batches) are concatenated; validation items (one image each) stacked."""
    if "dataset" not in items[0]:
        return collate(items)
    return {key: torch.cat([item[key] for item in items]) for key in items[0]}


# ----------------------------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------------------------


def epoch_cosine_factor(epoch: int, period: int = 5) -> float:
    """The original's learning-rate multiplier during `epoch` (0-based): `CosineAnnealingLR(T_max=period)` stepped
    once per epoch and never reset, i.e. (1 + cos(pi s / period)) / 2 at scheduler step s; an epoch that would start
    at exactly 0 steps the scheduler once more (the original's check), so s skips the odd multiples of `period`."""
    step = 0
    for _ in range(epoch + 1):
        if step % (2 * period) == period:  # the rate would be 0 at the start of this epoch: skipped
            step += 1
        current, step = step, step + 1
    return (1 + math.cos(math.pi * current / period)) / 2


def build_model(config: LiqeTrainingConfig):
    """A LIQE model from an hf_iqa LIQE folder, from a transformers CLIP checkpoint (LIQE's starting point: OpenAI
    ViT-B/32) or randomly initialised from `clip_config`."""
    from transformers import AutoConfig, CLIPConfig

    from hf_iqa.models.liqe import LiqeConfig, LiqeModel

    prompt_sets = {} if config.multitask else {"scenes": [], "distortions": []}
    if not config.model_name_or_path:
        clip_config = CLIPConfig(**config.clip_config) if config.clip_config else None
        liqe_config = LiqeConfig(clip_config=clip_config, **prompt_sets)
        liqe_config.patch_size = int(liqe_config.clip_config.vision_config.image_size)
        return LiqeModel(liqe_config)
    pretrained = AutoConfig.from_pretrained(config.model_name_or_path)
    if pretrained.model_type == "hf_iqa_liqe":
        if pretrained.multitask != config.multitask:
            raise ConfigError(
                f"model_name_or_path: {config.model_name_or_path} is a {'multitask' if pretrained.multitask else 'quality-only'} "
                f"LIQE model but multitask={config.multitask}; start from CLIP to change the prompt set"
            )
        return LiqeModel.from_pretrained(config.model_name_or_path)
    if pretrained.model_type != "clip":
        raise ConfigError(
            f"model_name_or_path: {config.model_name_or_path} is a {pretrained.model_type!r} model; expected an hf_iqa "
            "LIQE folder or a transformers CLIP checkpoint"
        )
    liqe_config = LiqeConfig(clip_config=pretrained.to_dict(), **prompt_sets)
    liqe_config.patch_size = int(pretrained.vision_config.image_size)
    return LiqeModel.from_pretrained(config.model_name_or_path, config=liqe_config)


def build_task(config: LiqeTrainingConfig, accelerator) -> TrainingTask:
    """The LIQE task: model and prompts, the multi-dataset steps and validation sets, the DWA-weighted losses."""
    model = build_model(config)
    model.clip.logit_scale.requires_grad_(config.train_logit_scale)
    tokenizer, input_ids = prompt_inputs(model, accelerator.device)
    processor, steps, eval_sets, eval_names = build_datasets(config, model)
    if config.num_epochs is not None:
        config.max_steps = epochs_to_steps(
            config.num_epochs, config.steps_per_epoch, config, accelerator.num_processes
        )
    tasks = TASKS if model.config.multitask else TASKS[:1]
    dwa = DynamicWeightAverage(
        len(tasks), config.dwa_temperature, reduce=lambda t: accelerator.reduce(t.to(accelerator.device), "mean").cpu()
    )

    def compute_loss(model, batch):
        output = model(pixel_values=batch["pixel_values"], patch_mask=batch["patch_mask"], input_ids=input_ids)
        weights = dwa.weights(steps.epoch) if config.use_dwa else [1.0] * len(tasks)
        return weighted_losses(output, batch, tasks, weights, dwa)

    def epoch_schedule(step: int) -> float:  # one "epoch" = steps_per_epoch optimizer steps
        return epoch_cosine_factor(step // config.steps_per_epoch, config.cosine_period_epochs)

    def predict(model, batch):  # per-dataset groups: the selection SRCC is the mean over datasets, as the paper's
        output = model(pixel_values=batch["pixel_values"], patch_mask=batch["patch_mask"], input_ids=input_ids)
        return output.scores, batch["mos"], batch["group"]

    return TrainingTask(
        model=model,
        train_dataset=steps,
        collate_fn=collate_steps,
        compute_loss=compute_loss,
        eval_dataset=ConcatDataset(eval_sets) if eval_sets else None,
        predict=predict,
        image_processor=processor,
        tokenizer=tokenizer,
        save_extra=lambda directory: write_liqe_card(directory, config, model.config.multitask),
        eval_group_names=eval_names,
        lr_lambda=epoch_schedule if config.lr_scheduler == "epoch_cosine" else None,
        checkpoint_state={"dwa": dwa},
    )


def prompt_inputs(model, device) -> tuple[Any, torch.Tensor]:
    """The CLIP tokenizer and the prompts' token ids on `device`; registers the hook that recomputes the stored
    prompt embeddings from the trained text tower whenever the weights are saved."""
    from hf_iqa.openai_clip import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    # training re-encodes every prompt at each step; padding to the longest prompt gives the embeddings of
    # 77-token padding (causal mask, end-of-text pooling) at a third of the cost
    input_ids = tokenizer(model.config.prompts, padding="longest", return_tensors="pt")["input_ids"]

    def refresh_prompts(module, prefix, keep_vars):  # state_dict pre-hook: saved weights carry fresh prompts
        was_training = module.training
        module.eval()
        module.compute_prompt_text_features(tokenizer)
        module.train(was_training)

    model.register_state_dict_pre_hook(refresh_prompts)
    return tokenizer, input_ids.to(device)


def build_datasets(config: LiqeTrainingConfig, model) -> tuple[Any, MultiDatasetSteps, list, list[str]]:
    """(validation processor, training steps, one validation set per dataset that has one, their names)."""
    from hf_iqa.models.liqe import LiqeImageProcessor

    protocol_kwargs = dict(protocol=config.protocol, patch_size=model.config.patch_size)
    processor = LiqeImageProcessor(num_patches=model.config.num_patches, **protocol_kwargs)
    train_processor = LiqeImageProcessor(num_patches=config.num_train_patches, **protocol_kwargs)
    where = [f"datasets[{i}]" for i in range(len(config.datasets))]
    train_sets = [load_records(spec, "train", w) for spec, w in zip(config.datasets, where)]
    batch_sizes = [int(spec.get("batch_size", config.default_batch_size)) for spec in config.datasets]
    steps = MultiDatasetSteps(
        train_sets, batch_sizes, config.steps_per_epoch, train_processor, config.num_train_patches, config.seed
    )
    validated = [index for index, spec in enumerate(config.datasets) if has_validation(spec)]
    eval_sets = [
        ProcessedImages(load_records(config.datasets[index], "validation", where[index]), processor, group=group)
        for group, index in enumerate(validated)
    ]
    eval_names = [dataset_name(config.datasets[index], index) for index in validated]
    return processor, steps, eval_sets, eval_names


def weighted_losses(output, batch, tasks: Sequence[str], weights: Sequence[float], dwa: DynamicWeightAverage):
    """The weighted sum of the task losses (quality, then distortion and scene in the multitask recipe), with the
    losses and weights for the logs; the DWA averages are updated with this batch's losses."""
    losses = [quality_fidelity_loss(output.scores, batch["mos"], batch["dataset"])]
    if len(tasks) == 3:
        losses.append(distortion_fidelity_loss(output.distortion_probs, batch["distortion"]))
        losses.append(scene_fidelity_loss(output.scene_probs, batch["scenes"]))
    dwa.update([float(loss.detach()) for loss in losses])
    total = sum(w * loss for w, loss in zip(weights, losses))
    extras = {f"loss_{name}": loss.detach() for name, loss in zip(tasks, losses)}
    return total, extras | {f"weight_{name}": w for name, w in zip(tasks, weights)}


def write_liqe_card(directory: str, config: LiqeTrainingConfig, multitask: bool) -> None:
    kind = "multitask (quality x scene x distortion)" if multitask else "quality-only"
    names = ", ".join(dataset_name(spec, index) for index, spec in enumerate(config.datasets))
    notes = (
        f"A {kind} LIQE model (Zhang et al., CVPR 2023) trained on {names}. Scores are the expected quality level "
        "in [1, 5]. The prompt embeddings in the weights were recomputed from the trained text tower."
    )
    write_card(directory, "liqe", "LIQE (trained with hf_iqa)", config, notes)


def dataset_name(spec: dict, index: int) -> str:
    """A short name for a dataset mapping of the config (logs, model card)."""
    return str(spec.get("name", spec.get("benchmark", spec.get("train_file", f"dataset{index}"))))


def main(argv: list[str] | None = None, prog: str = "accelerate launch -m hf_iqa.training.liqe") -> int:
    return run_recipe(LiqeTrainingConfig, build_task, argv, prog=prog, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
