"""Training and fine-tuning recipes, run with `accelerate launch -m hf_iqa.training.<recipe> --config FILE.yaml`
or `hf-iqa train <recipe> --config FILE.yaml`. The shared loop and configuration live in `hf_iqa.training.common`,
the pickle-free checkpoints (safetensors + JSON) in `hf_iqa.training.checkpoint`; each other module with a
`main(argv)` is a recipe."""
