"""QualiCLIP+ prompt learning (pyiqa's supervised recipe, `train_QualiCLIP_{koniq10k,clive,flive,spaq}.yml`):
CoOp-style learned context tokens around each antonym prompt, on a frozen QualiCLIP.

    accelerate launch -m hf_iqa.training.qualiclip_plus --config examples/training/qualiclip_plus_koniq.yaml
    hf-iqa train qualiclip_plus --config examples/training/qualiclip_plus_koniq.yaml

Each of the 14 prompts gets `n_ctx` (16) learned vectors, half before and half after its words (pyiqa's
"class in the middle"), run through the frozen CLIP text tower; the image tower is frozen too. Only the context
`prompt_learner.ctx` trains, with MSE + PLCC loss ((1 - r) / 2) between the score (mean over pairs of
softmax(scale * cos)[positive]) and MOS normalised to [0, 1]. The model needs its text tower: start from a QualiCLIP
folder converted with `--keep-text-tower` (a prompt learner is added if it has none: ctx ~ N(0, 0.02), the token
embeddings of "X X ... X <prompt>" around the placeholders) or from a QualiCLIP+ folder (its context is
fine-tuned). The saved folder stores the prompt features recomputed from the learned context
(`prompt_text_features`), so scoring stays image-only; the text tower and the learner are kept for re-training.

Hyperparameters. pyiqa's (qualiclip.md §8.2): Adam, lr 2e-3, cosine annealing over the run (T_max = 50 epochs,
eta_min 0), 50 epochs, no warm-up, batch 8, seed 123, MSE (1.0) + PLCC (1.0) losses, n_ctx 16 prompt-specific,
random horizontal flip + random 384 crop (SPAQ: short side resized to 512 first), validation on the full image,
best checkpoint by SRCC, score scale 50 (pyiqa's `logit_scale.exp() / 2`). Ours: the cosine is stepped per
optimizer step; MOS is normalised from each dataset's native range (pyiqa maps [1, 100] to [0, 1]); FLIVE's random
aspect-ratio resize is not reproduced; no gradient clipping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hf_iqa.training.common import ConfigError, TrainingConfig, TrainingTask, option, run_recipe
from hf_iqa.training.iqa_data import (
    ProcessedImages,
    RandomCropImages,
    collate,
    epochs_to_steps,
    has_validation,
    load_records,
    plcc_loss,
    write_card,
)


@dataclass
class QualiClipPlusTrainingConfig(TrainingConfig):
    """QualiCLIP+ prompt-learning options (see the module docstring)."""

    model_name_or_path: str = option(
        "", help="start from an hf_iqa QualiCLIP folder with its text tower, or a QualiCLIP+ folder"
    )
    model_config: dict | None = option(None, help="random init from these QualiClipConfig values instead (tests)")
    data: dict = option(default_factory=dict, help="one dataset mapping (see hf_iqa.training.iqa_data)")
    num_epochs: float | None = option(50.0, help="sets max_steps; null: use max_steps")
    crop_size: int = option(384, help="side of the random training crop")
    resize_short_side: int | None = option(None, help="resize the short side first (512 for SPAQ); null: no")
    n_ctx: int = option(16, help="learned context tokens per prompt")
    reinitialize_prompts: bool = option(False, help="start the prompt context from random values (std 0.02)")
    prompt_logit_scale: float | None = option(
        50.0, help="logit scale of the prompt similarities (pyiqa's for qualiclip+); null: the model's"
    )
    mse_weight: float = option(1.0, help="weight of the MSE loss against the normalised MOS")
    plcc_weight: float = option(1.0, help="weight of the PLCC loss")
    # pyiqa's optimisation; TrainingConfig defaults overridden
    optimizer: str = "adam"
    learning_rate: float = 2e-3
    lr_scheduler: str = "cosine"
    train_batch_size: int = 8
    eval_batch_size: int = 1
    max_grad_norm: float | None = None
    seed: int = 123

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ConfigError("data: give the dataset mapping (see hf_iqa.training.iqa_data)")
        if self.n_ctx < 2 or self.n_ctx % 2:
            raise ConfigError(f"n_ctx must be an even number >= 2, got {self.n_ctx}")


@torch.no_grad()
def add_prompt_learner(model, n_ctx: int, tokenizer) -> None:
    """Give a QualiCLIP model (with text tower) a fresh QualiCLIP+ prompt learner, initialised as pyiqa does."""
    from hf_iqa.models.qualiclip.modeling_qualiclip import QualiClipPromptLearner

    config = model.config
    context_length = config.text_config.max_position_embeddings
    ids = torch.zeros(len(config.prompts), context_length, dtype=torch.long)  # zero padding, as clip.tokenize
    lengths = []
    for row, prompt in enumerate(config.prompts):
        lengths.append(len(tokenizer(prompt)["input_ids"]) - 2)
        tokens = tokenizer("X " * n_ctx + prompt)["input_ids"]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    config.n_ctx, config.prompt_token_lengths, config.use_prompt_learner = n_ctx, lengths, True
    learner = QualiClipPromptLearner(config).to(model.prompt_text_features.device)
    embeddings = model.text_model.embeddings.token_embedding(ids.to(learner.ctx.device))
    learner.token_prefix.copy_(embeddings[:, :1])
    learner.token_suffix.copy_(embeddings[:, 1 + n_ctx :])
    torch.nn.init.normal_(learner.ctx, std=0.02)
    model.prompt_learner = learner


def build_model(config: QualiClipPlusTrainingConfig):
    from hf_iqa.models.qualiclip import QualiClipConfig, QualiClipModel
    from hf_iqa.openai_clip import build_clip_tokenizer

    if config.model_name_or_path:
        model = QualiClipModel.from_pretrained(config.model_name_or_path)
    elif config.model_config is not None:
        model = QualiClipModel(QualiClipConfig(**config.model_config))
    else:
        raise ConfigError("give model_name_or_path (an hf_iqa QualiCLIP folder with its text tower) or model_config")
    if model.text_model is None:
        raise ConfigError(
            f"model_name_or_path: {config.model_name_or_path} is image-only; QualiCLIP+ needs the text tower "
            "(convert the QualiCLIP checkpoint with --keep-text-tower)"
        )
    if model.prompt_learner is None or config.reinitialize_prompts:
        add_prompt_learner(model, config.n_ctx, build_clip_tokenizer())
    if config.prompt_logit_scale is not None:
        model.config.prompt_logit_scale = float(config.prompt_logit_scale)
    model.config.variant = "qualiclip+"
    model.requires_grad_(False)
    model.prompt_learner.ctx.requires_grad_(True)
    return model


class PromptLearningView(torch.nn.Module):
    """What the training loop sees: the QualiCLIP+ score with prompt features computed from the learned context at
    every forward (so gradients reach `ctx`, and DDP synchronises them), the image tower frozen in eval mode.
    `save_pretrained` stores the model with its prompt features refreshed from the context."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values) -> torch.Tensor:
        model = self.model
        model.vision_model.eval()
        with torch.no_grad():
            image = F.normalize(model.get_image_features(pixel_values).float(), dim=-1)
        text = F.normalize(model.get_prompt_learner_features().float(), dim=-1)
        logits = (model.config.prompt_logit_scale * image @ text.t()).view(image.shape[0], -1, 2)
        return logits.softmax(dim=-1)[..., 0].mean(dim=-1)  # the formula of QualiClipModel.forward

    def save_pretrained(self, directory, state_dict=None, **kwargs) -> None:
        features = self.model.compute_prompt_text_features()
        if state_dict is not None:
            state_dict = {key.removeprefix("model."): value for key, value in state_dict.items()}
            state_dict["prompt_text_features"] = features.detach().clone()
        self.model.save_pretrained(directory, state_dict=state_dict, **kwargs)


def build_task(config: QualiClipPlusTrainingConfig, accelerator) -> TrainingTask:
    from transformers import AutoImageProcessor

    from hf_iqa.models.qualiclip import QualiClipImageProcessor

    model = build_model(config)
    processor = None
    if config.model_name_or_path:
        try:
            processor = AutoImageProcessor.from_pretrained(config.model_name_or_path)
        except OSError:
            processor = None
    if not isinstance(processor, QualiClipImageProcessor):
        processor = QualiClipImageProcessor()
    if config.resize_short_side:  # evaluate (and later score) at the training resolution, as pyiqa's SPAQ recipe
        processor.do_resize, processor.size = True, {"shortest_edge": int(config.resize_short_side)}

    train_records = load_records(config.data, "train", "data")
    train_dataset = RandomCropImages(
        train_records,
        config.crop_size,
        processor.image_mean,
        processor.image_std,
        seed=config.seed,
        resize_short_side=config.resize_short_side,
    )
    eval_dataset = None
    if has_validation(config.data):
        eval_dataset = ProcessedImages(load_records(config.data, "validation", "data"), processor)
    if config.num_epochs is not None:
        config.max_steps = epochs_to_steps(config.num_epochs, len(train_records), config, accelerator.num_processes)

    def compute_loss(view, batch):
        scores = view(batch["pixel_values"])
        mos = batch["mos"].to(scores)
        mse, plcc = F.mse_loss(scores, mos), plcc_loss(scores, mos)
        return config.mse_weight * mse + config.plcc_weight * plcc, {
            "loss_mse": mse.detach(),
            "loss_plcc": plcc.detach(),
        }

    def predict(view, batch):
        return view(batch["pixel_values"]), batch["mos"]

    def save_extra(directory: str) -> None:
        name = config.data.get("name", config.data.get("benchmark", config.data.get("train_file")))
        notes = (
            f"QualiCLIP+ (pyiqa's supervised prompt learning on QualiCLIP): {config.n_ctx} learned context tokens per "
            f"prompt trained on {name} with MSE + PLCC loss; image and text towers frozen. The prompt features in the "
            f"weights come from the learned context, so scoring runs the image tower only. Score scale "
            f"{model.config.prompt_logit_scale:g}; scores in [0, 1]."
        )
        write_card(directory, "qualiclip", "QualiCLIP+ (trained with hf_iqa)", config, notes)

    return TrainingTask(
        model=PromptLearningView(model),
        train_dataset=train_dataset,
        collate_fn=collate,
        compute_loss=compute_loss,
        eval_dataset=eval_dataset,
        predict=predict,
        image_processor=processor,
        save_extra=save_extra,
    )


def main(argv: list[str] | None = None, prog: str = "accelerate launch -m hf_iqa.training.qualiclip_plus") -> int:
    return run_recipe(QualiClipPlusTrainingConfig, build_task, argv, prog=prog, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
