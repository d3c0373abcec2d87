"""One suite every registered model family runs, like transformers' `ModelTesterMixin`: the output contract of
`hf_iqa/models/__init__.py`, save/reload, remote code without hf_iqa, bf16/fp16 loading, batch = one by one,
`return_dict=False` and gradient flow, on tiny random models built in code. A new model folder adds one entry to
`TESTERS` (and fails `test_every_registered_family_has_a_tester` until it does).

Model-specific behaviour (parity with the originals, conversion, fast paths) stays in each model's own tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, CLIPConfig, PreTrainedModel
from transformers.utils import ModelOutput

import hf_iqa
from tests.testing_utils import random_image, run_without_hf_iqa

FAMILIES = sorted(hf_iqa.registered_models())


def tiny_clip_config(projection_dim: int = 16) -> CLIPConfig:
    """A 2-layer ViT (32 x 32 inputs, 8 x 8 patches) and a 1-layer text tower, OpenAI-style quick_gelu."""
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    vision.update(image_size=32, patch_size=8, hidden_act="quick_gelu")
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    return CLIPConfig(vision_config=vision, text_config=text, projection_dim=projection_dim)


def unit_rows(shape: tuple[int, int], seed: int) -> torch.Tensor:
    """Random L2-normalised prompt features: the zeros a fresh model stores would make every score equal."""
    return torch.nn.functional.normalize(torch.randn(shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def pixels(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@dataclass
class FamilyTester:
    """How to build a tiny model of a family and inputs as its image processor would give them."""

    build: Callable[[], PreTrainedModel]
    inputs: Callable[[int], dict]  # a batch of n images; image i is the same whatever n
    trainable: bool = True  # False: training-free (Dog-IQA), no gradient test
    bounded: bool = True  # scores lie within config.score_range by construction
    # tensors that must stay fp32 under dtype=bf16/fp16 (prompt features and their scale)
    fp32_tensors: list[str] = field(default_factory=list)
    batch_size: int = 3  # images per batch in the tests (Dog-IQA: 2, each image costs many MLLM passes)


def build_liqe() -> PreTrainedModel:
    from hf_iqa.models.liqe import LiqeConfig, LiqeModel

    torch.manual_seed(0)
    model = LiqeModel(LiqeConfig(clip_config=tiny_clip_config(), num_patches=2))
    model.prompt_text_features.copy_(unit_rows(tuple(model.prompt_text_features.shape), 1))
    return model.eval()


def liqe_inputs(n: int) -> dict:
    mask = torch.ones(n, 2, dtype=torch.long)
    mask[-1, 1] = 0  # the last image has one window only (a small image): padding must not change its score
    return {"pixel_values": torch.stack([pixels(2, 3, 32, 32, seed=i) for i in range(n)]), "patch_mask": mask}


def build_qualiclip() -> PreTrainedModel:
    from hf_iqa.models.qualiclip import QualiClipConfig, QualiClipModel

    torch.manual_seed(0)
    tower = dict(layers=[1, 1, 1, 1], width=8, image_size=64, num_attention_heads=4, projection_dim=32)
    model = QualiClipModel(QualiClipConfig(vision_config=tower, projection_dim=32))
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that folding them matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.running_var.uniform_(0.5, 2.0)
                module.running_mean.normal_(0, 0.2)
    return model.eval()


def qualiclip_inputs(n: int) -> dict:
    sizes = [(64, 64), (64, 96), (96, 64)]  # native resolution: same-size images run together
    return {"pixel_values": [pixels(3, *sizes[i % 3], seed=i) for i in range(n)]}


def build_uniqa() -> PreTrainedModel:
    from hf_iqa.models.uniqa import UniQaConfig, UniQaModel

    torch.manual_seed(0)
    model = UniQaModel(UniQaConfig(clip_config=tiny_clip_config(), adapter_tasks=["quality"]))
    for index, head in enumerate(model.heads.values()):
        head.prompt_text_features.copy_(unit_rows(tuple(head.prompt_text_features.shape), index + 1))
    return model.eval()


def uniqa_inputs(n: int) -> dict:
    return {"pixel_values": torch.stack([pixels(2, 3, 32, 32, seed=i) for i in range(n)])}


@pytest.fixture(scope="session")
def dog_iqa_paths(tmp_path_factory):
    from tests.models.dog_iqa.tiny_models import save_tiny_models

    return save_tiny_models(str(tmp_path_factory.mktemp("common_dog_iqa")), families=("qwen2_vl",))


DOG_IQA_PATHS: dict[str, str] = {}


def build_dog_iqa() -> PreTrainedModel:
    from hf_iqa.models.dog_iqa import DogIqaConfig, DogIqaModel

    # settings that make the tiny random SAM2 keep a region on 96 x 64 images, with a 4 x 4 point grid
    config = DogIqaConfig(
        segmenter_name_or_path=DOG_IQA_PATHS["sam2"],
        mllm_name_or_path=DOG_IQA_PATHS["qwen2_vl"],
        pred_iou_thresh=0.0,
        min_region_area=200,
        points_per_side=4,
        score_mode="expected",  # the released greedy reading gives a random tiny MLLM's one digit for every image
    )
    return DogIqaModel.from_pretrained("unused", config=config)


def dog_iqa_inputs(n: int) -> dict:
    from hf_iqa.models.dog_iqa import DogIqaImageProcessor

    return dict(DogIqaImageProcessor()([random_image(96, 64, seed) for seed in range(n)], return_tensors="pt"))


TESTERS = {
    "liqe": FamilyTester(build_liqe, liqe_inputs, fp32_tensors=["prompt_text_features", "clip.logit_scale"]),
    "qualiclip": FamilyTester(build_qualiclip, qualiclip_inputs, fp32_tensors=["prompt_text_features"]),
    "uniqa": FamilyTester(
        build_uniqa,
        uniqa_inputs,
        fp32_tensors=["heads.quality.prompt_text_features", "clip.logit_scale", "heads.quality.score_level"],
    ),
    "dog_iqa": FamilyTester(build_dog_iqa, dog_iqa_inputs, trainable=False, bounded=False, batch_size=2),
}
TRAINABLE = [family for family in FAMILIES if TESTERS.get(family, FamilyTester(None, None)).trainable]


@pytest.fixture
def tester(request, dog_iqa_paths) -> FamilyTester:
    DOG_IQA_PATHS.update(dog_iqa_paths)
    return TESTERS[request.param]


@pytest.fixture(scope="session")
def saved(tmp_path_factory, dog_iqa_paths) -> dict:
    """Each family saved once: folder, the fp32 scores of 3 images, and the inputs."""
    DOG_IQA_PATHS.update(dog_iqa_paths)
    root = tmp_path_factory.mktemp("common_saved")
    result = {}
    for family in FAMILIES:
        model = TESTERS[family].build()
        folder = root / family
        model.save_pretrained(folder)
        inputs = TESTERS[family].inputs(TESTERS[family].batch_size)
        with torch.no_grad():
            result[family] = (folder, model(**inputs).scores, inputs)
    return result


def scores_of(model, inputs, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs, **kwargs).scores


def test_every_registered_family_has_a_tester():
    assert set(FAMILIES) == set(TESTERS), "add a Tester for the new model folder to TESTERS"


@pytest.mark.parametrize("tester", FAMILIES, indirect=True)
def test_output_contract(tester):
    model, n = tester.build(), tester.batch_size
    with torch.no_grad():
        output = model(**tester.inputs(n))
    assert isinstance(output, ModelOutput)
    assert next(iter(output.keys())) == "scores"
    scores = output.scores
    assert scores.shape == (n,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert scores.unique().numel() > 1, "every image got the same score: the tiny model is degenerate"
    for name, value in output.items():
        if isinstance(value, torch.Tensor):
            assert value.shape[0] == n, f"{name} has no batch on dim 0: {tuple(value.shape)}"
    for name, labels in model.config.output_labels.items():
        assert output[name].shape == (n, len(labels)), name
        assert ((output[name] >= 0) & (output[name] <= 1)).all(), f"{name} holds no probabilities"
    low, high = model.config.score_range
    if tester.bounded:
        assert ((scores >= low - 1e-5) & (scores <= high + 1e-5)).all(), (scores, low, high)
    assert model.config.higher_is_better is True


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_reload_give_the_same_model(family, saved):
    folder, expected, inputs = saved[family]
    reloaded = AutoModel.from_pretrained(folder)
    assert type(reloaded).__module__.startswith("hf_iqa.")
    torch.testing.assert_close(scores_of(reloaded, inputs), expected, atol=0, rtol=0)
    assert (folder / "config.json").is_file()
    assert json.loads((folder / "config.json").read_text())["auto_map"]["AutoModel"].startswith("modeling_")


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_one_by_one(family, saved):
    folder, batched, _ = saved[family]
    model = AutoModel.from_pretrained(folder)
    tester = TESTERS[family]
    n = tester.batch_size
    for index in range(n):
        one = {key: value[index : index + 1] for key, value in tester.inputs(n).items()}
        torch.testing.assert_close(scores_of(model, one), batched[index : index + 1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_return_dict_false_gives_the_fields_as_a_tuple(family, saved):
    folder, expected, inputs = saved[family]
    model = AutoModel.from_pretrained(folder)
    with torch.no_grad():
        output = model(**inputs, return_dict=False)
        fields = model(**inputs).to_tuple()
    assert isinstance(output, tuple) and len(output) == len(fields)
    torch.testing.assert_close(output[0], expected, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_low_precision_loading(family, dtype, saved):
    """`from_pretrained(dtype=...)` gives that dtype (`model.dtype` reports it), the prompt features stay fp32, and
    bf16 scores stay close to fp32."""
    folder, expected, inputs = saved[family]
    model = AutoModel.from_pretrained(folder, dtype=dtype)
    assert model.dtype == dtype
    tensors = dict([*model.named_parameters(), *model.named_buffers()])
    for name in TESTERS[family].fp32_tensors:
        assert tensors[name].dtype == torch.float32, name
    converted = [t for n, t in tensors.items() if t.is_floating_point() and n not in TESTERS[family].fp32_tensors]
    assert sum(t.numel() for t in converted if t.dtype == dtype) > 0.9 * sum(t.numel() for t in converted)
    if dtype == torch.bfloat16 and family != "dog_iqa":  # CPU fp16 kernels are incomplete; Dog-IQA: too slow
        low = scores_of(model, inputs)
        assert low.dtype == torch.float32
        low_range, high_range = model.config.score_range
        torch.testing.assert_close(low, expected, atol=0.05 * (high_range - low_range), rtol=0)


@pytest.mark.parametrize("family", TRAINABLE)
def test_gradients_reach_the_pixels_and_the_image_tower(family):
    """Training and differentiable-quality losses need gradients through the whole image path."""
    tester = TESTERS[family]
    model = tester.build()
    inputs = tester.inputs(2)
    values = inputs["pixel_values"]
    leaves = values if isinstance(values, list) else [values]
    for leaf in leaves:
        leaf.requires_grad_(True)
    model(**inputs).scores.sum().backward()
    assert all(leaf.grad is not None and leaf.grad.abs().sum() > 0 for leaf in leaves)
    reached = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    first = [name for name, p in model.named_parameters() if "vision" in name or "visual" in name][0]
    assert first in reached, f"no gradient reaches {first}"
    assert len(reached) > 0.5 * sum(1 for name, _ in model.named_parameters() if "vision" in name)


REMOTE_CODE = """
import json, sys, torch
from transformers import AutoModel
folders, inputs_file = sys.argv[1], sys.argv[2]
all_inputs = torch.load(inputs_file, weights_only=True)
result = {}
for family, folder in json.loads(folders).items():
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    with torch.no_grad():
        scores = model(**all_inputs[family]).scores
    modules = sorted(m.rsplit(".", 1)[-1] for m in sys.modules if m.startswith("transformers_modules") and "." in m)
    result[family] = {"scores": scores.tolist(), "module": type(model).__module__, "modules": modules}
print(json.dumps(result))
"""


def test_remote_code_without_hf_iqa(saved, tmp_path):
    """Every saved folder loads and scores identically in a Python where `import hf_iqa` fails; the speed-up files
    (`fast_*.py`) travel with the modeling files and are used."""
    folders = {family: str(folder) for family, (folder, _, _) in saved.items()}
    package = Path(hf_iqa.__file__).parent / "models"
    fast = {family for family in folders if (package / family / f"fast_{family}.py").is_file()}
    assert {"liqe", "qualiclip", "uniqa"} <= fast
    for family in fast:
        assert (saved[family][0] / f"fast_{family}.py").is_file(), f"fast_{family}.py was not saved with the code"
    inputs_file = tmp_path / "inputs.pt"
    torch.save({family: inputs for family, (_, _, inputs) in saved.items()}, inputs_file)
    code = REMOTE_CODE.replace("sys.argv[1], sys.argv[2]", f"{json.dumps(json.dumps(folders))}, {str(inputs_file)!r}")
    result = json.loads(run_without_hf_iqa(code).strip().splitlines()[-1])
    for family, (_, expected, _) in saved.items():
        assert result[family]["module"].startswith("transformers_modules"), result[family]["module"]
        torch.testing.assert_close(torch.tensor(result[family]["scores"]), expected, atol=1e-6, rtol=0)
        if family in fast:
            assert f"fast_{family}" in result[family]["modules"], result[family]["modules"]
