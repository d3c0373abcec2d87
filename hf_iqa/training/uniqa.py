"""Train a UniQA task head (Zhou et al., arXiv 2406.01069): frozen CLIP backbone, residual adapter + level values.

    accelerate launch -m hf_iqa.training.uniqa --config examples/training/uniqa_koniq.yaml
    hf-iqa train uniqa --config examples/training/uniqa_livec.yaml --task aesthetics ...

The head of `task` ("quality" or "aesthetics") is trained on MOS normalised to [0, 1] with the MSE between the
crop's score and the MOS; the backbone (both towers, `logit_scale`) and the other head stay frozen, and the backbone
runs in eval mode (BatchNorm statistics of a ResNet tower untouched). A head without an adapter (a converted,
zero-shot UniQA folder) gets a fresh one (torch's default Linear init, as upstream) and the level values start at
`score_levels_init`; a head that has one is fine-tuned unless `reinitialize_head` is set. The saved folder holds
both heads and scores with the trained one by default (`config.task`); train the other task starting from that
folder to get one model with two trained heads.

Hyperparameters. The paper's (`UQ:options/train/UniQA/{koniq,livec}.yml`, uniqa.md §8.2): Adam, lr 2e-4, no weight
decay, cosine annealing over the run (T_max = epochs), no warm-up, 20 epochs on KonIQ-10k (512x384), 50 on LIVEC,
batch 8 (validation 16), random horizontal flip + random 224 crop, MSE loss only, seed 123, best checkpoint by SRCC,
validation with 10 random 224 crops (the saved `UniQaImageProcessor`, seeded). Ours: the cosine is stepped per optimizer step rather
than per epoch; validation uses the dataset's validation split (upstream selects on its test split, so its numbers
are optimistic); splits come from `hf_iqa.data` (official KonIQ split; upstream uses its own 10 random splits);
no gradient clipping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hf_iqa.openai_clip import CLIP_MEAN, CLIP_STD
from hf_iqa.training.common import ConfigError, TrainingConfig, TrainingTask, option, run_recipe
from hf_iqa.training.iqa_data import (
    ProcessedImages,
    RandomCropImages,
    collate,
    epochs_to_steps,
    has_validation,
    load_records,
    write_card,
)


@dataclass
class UniQaTrainingConfig(TrainingConfig):
    """UniQA adapter training options (see the module docstring)."""

    model_name_or_path: str = option("", help="start from an hf_iqa UniQA folder (converted backbone, or a run)")
    model_config: dict | None = option(
        None, help="random init from these UniQaConfig values instead (no model_name_or_path); tests"
    )
    task: str = option("quality", help="quality or aesthetics: the head that trains (the other stays frozen)")
    data: dict = option(default_factory=dict, help="one dataset mapping (see hf_iqa.training.iqa_data)")
    num_epochs: float | None = option(20.0, help="sets max_steps; null: use max_steps")
    reinitialize_head: bool = option(False, help="start the head from a fresh adapter even if the model has one")
    # the paper's optimisation; TrainingConfig defaults overridden
    optimizer: str = "adam"
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    train_batch_size: int = 8
    eval_batch_size: int = 16
    max_grad_norm: float | None = None
    seed: int = 123

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task not in ("quality", "aesthetics"):
            raise ConfigError(f"task must be 'quality' or 'aesthetics', got {self.task!r}")
        if not self.data:
            raise ConfigError("data: give the dataset mapping (see hf_iqa.training.iqa_data)")


def build_model(config: UniQaTrainingConfig):
    """The UniQA model with a trainable head for `config.task` and everything else frozen."""
    from hf_iqa.models.uniqa import UniQaConfig, UniQaModel
    from hf_iqa.models.uniqa.modeling_uniqa import UniQaAdapter
    from hf_iqa.openai_clip import build_clip_tokenizer

    if config.model_name_or_path:
        model = UniQaModel.from_pretrained(config.model_name_or_path)
    elif config.model_config is not None:
        model = UniQaModel(UniQaConfig(**config.model_config))
    else:
        raise ConfigError("give model_name_or_path (an hf_iqa UniQA folder) or model_config")
    head = model.heads[config.task]
    if not bool(head.prompt_text_features.any()):  # a randomly initialised model: encode its prompts once
        model.compute_prompt_text_features(build_clip_tokenizer())
    if head.adapter is None or config.reinitialize_head:
        adapter = UniQaAdapter(model.config.projection_dim, model.config.adapter_hidden_size)
        fresh = {f"adapter.{name}": value for name, value in adapter.state_dict().items()}
        model.load_task_head(config.task, fresh | {"score_level": torch.tensor(model.config.score_levels_init)})
    model.config.task = config.task
    model.requires_grad_(False)
    head.requires_grad_(True)
    return model


def build_task(config: UniQaTrainingConfig, accelerator) -> TrainingTask:
    from transformers import AutoImageProcessor

    from hf_iqa.models.uniqa import UniQaImageProcessor

    model = build_model(config)
    size = model.config.image_size
    processor = None
    if config.model_name_or_path:
        try:
            processor = AutoImageProcessor.from_pretrained(config.model_name_or_path)
        except OSError:
            processor = None
    if not isinstance(processor, UniQaImageProcessor):
        processor = UniQaImageProcessor(crop_size={"height": size, "width": size})

    train_records = load_records(config.data, "train", "data")
    train_dataset = RandomCropImages(train_records, size, CLIP_MEAN, CLIP_STD, seed=config.seed)
    eval_dataset = None
    if has_validation(config.data):
        eval_dataset = ProcessedImages(load_records(config.data, "validation", "data"), processor)
    if config.num_epochs is not None:
        config.max_steps = epochs_to_steps(config.num_epochs, len(train_records), config, accelerator.num_processes)
    unwrap = accelerator.unwrap_model

    def compute_loss(model, batch):
        unwrap(model).clip.eval()  # frozen backbone: no BatchNorm statistics updates
        scores = model(pixel_values=batch["pixel_values"], task=config.task).scores
        return F.mse_loss(scores, batch["mos"].to(scores))

    def predict(model, batch):
        return model(pixel_values=batch["pixel_values"], task=config.task).scores, batch["mos"]

    def save_extra(directory: str) -> None:
        name = config.data.get("name", config.data.get("benchmark", config.data.get("train_file")))
        notes = (
            f"UniQA (Zhou et al., arXiv 2406.01069) with a `{config.task}` head (adapter + level values) trained on "
            f"{name}, MOS normalised to [0, 1]; the backbone is frozen. Select a head with "
            '`AutoModel.from_pretrained(folder, task="quality" | "aesthetics")`.'
        )
        write_card(directory, "uniqa", f"UniQA {config.task} head (trained with hf_iqa)", config, notes)

    return TrainingTask(
        model=model,
        train_dataset=train_dataset,
        collate_fn=collate,
        compute_loss=compute_loss,
        eval_dataset=eval_dataset,
        predict=predict,
        image_processor=processor,
        save_extra=save_extra,
    )


def main(argv: list[str] | None = None, prog: str = "accelerate launch -m hf_iqa.training.uniqa") -> int:
    return run_recipe(UniQaTrainingConfig, build_task, argv, prog=prog, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
