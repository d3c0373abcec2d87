"""`hf_iqa.onnx` export: onnxruntime reproduces PyTorch for every family (dynamic batch and, for QualiCLIP,
height and width), nothing is saved when it does not, and the int8 / fp16 variants carry their measured drift."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_iqa.onnx import OnnxScorer, is_onnx_folder
from hf_iqa.onnx.export import ExportError, export_onnx, max_difference, torch_results
from hf_iqa.onnx.images import degraded_images, parity_images
from tests.onnx.conftest import tiny_model_and_processor
from tests.testing_utils import random_image

FAMILIES = ("liqe", "qualiclip", "uniqa")


@pytest.mark.parametrize("family", FAMILIES)
def test_onnxruntime_reproduces_pytorch_in_batches_of_mixed_sizes(exported, family):
    model, processor, folder = exported[family]
    assert is_onnx_folder(folder) and not is_onnx_folder(folder.parent)
    spec = json.loads((folder / "onnx_config.json").read_text())
    assert spec["opset"] == 18 and spec["parity"]["max_abs_difference"] <= 1e-4 and spec["parity"]["images"] >= 8
    assert (folder / "preprocessor_config.json").is_file() and "ONNX export" in (folder / "README.md").read_text()
    # images the export never saw, sizes it never saw, scored 3 at a time (QualiCLIP: per size inside a batch)
    images = [random_image(w, h, seed=i) for i, (w, h) in enumerate([(97, 64), (64, 64), (97, 64), (150, 201)])]
    scorer = OnnxScorer(folder)
    results = scorer.predict([scorer.prepare(image) for image in images[:3]]) + scorer.predict(
        [scorer.prepare(images[3])]
    )
    expected = torch_results(model, processor, images)
    assert [sorted(r) for r in results] == [sorted(r) for r in expected]
    assert max_difference(expected, results) <= 1e-4
    assert len({r["score"] for r in results}) > 1  # not a constant graph


def test_liqe_graph_serves_both_protocols(exported):
    from hf_iqa.models.liqe import LiqeImageProcessor

    model, _, folder = exported["liqe"]
    images = [random_image(200, 120, seed=3), random_image(64, 90, seed=4)]
    for protocol in ("official", "pyiqa"):
        processor = LiqeImageProcessor(patch_size=32, num_patches=3, protocol=protocol)
        scorer = OnnxScorer(folder, processor_kwargs={"protocol": protocol})
        got = scorer.predict([scorer.prepare(image) for image in images])
        assert max_difference(torch_results(model, processor, images), got) <= 1e-4


def test_pipeline_of_an_export_matches_the_torch_pipeline(exported):
    import hf_iqa

    model, processor, folder = exported["uniqa"]
    pipe = hf_iqa.pipeline(model=folder)
    assert type(pipe).__name__ == "OnnxImageQualityPipeline"
    image = random_image(80, 60, seed=1)
    single, batch = pipe(image), pipe([image, np.asarray(image)])
    assert max_difference(torch_results(model, processor, [image] * 3), [single, *batch]) <= 1e-4


def test_nothing_is_saved_when_parity_fails(tmp_path, monkeypatch):
    from hf_iqa.onnx import export

    model, processor = tiny_model_and_processor("liqe")
    monkeypatch.setattr(export, "PARITY_ATOL", -1.0)  # no graph can pass: the refusal path
    with pytest.raises(ExportError, match="nothing saved"):
        export_onnx(model, processor, tmp_path / "out", log=lambda line: None)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor the work folder is left


def test_a_non_empty_output_dir_needs_overwrite(exported, tmp_path):
    model, processor, folder = exported["liqe"]
    (tmp_path / "mine.txt").write_text("user file")
    with pytest.raises(ExportError, match="--overwrite"):
        export_onnx(model, processor, tmp_path, log=lambda line: None)
    assert (tmp_path / "mine.txt").read_text() == "user file"


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_variants_measure_and_bound_their_drift(tmp_path, precision):
    """The drift is measured on degraded photos and written to the card; the bound refuses. The figures of tiny
    random models say nothing about real ones, so no threshold is asserted on them."""
    model, processor = tiny_model_and_processor("liqe")
    kwargs = {"quantize": "dynamic-int8"} if precision == "int8" else {"fp16": True}
    images = degraded_images(photos=1)
    loose = {"min_srcc": -1.0, "max_abs": 1.0}
    spec = export_onnx(model, processor, tmp_path / "ok", drift_images=images, drift_bounds=loose,
                       log=lambda line: None, **kwargs)  # fmt: skip
    variant = spec["variant"]
    assert variant["precision"] == precision and variant["images"] == len(images) == 16
    assert 0 <= variant["max_abs_difference"] < 1 and -1 <= variant["srcc"] <= 1
    assert f"Variant `{precision}`" in (tmp_path / "ok" / "README.md").read_text()
    assert not (tmp_path / "ok" / "model.fp32.onnx").exists()
    scorer = OnnxScorer(tmp_path / "ok")  # the saved variant scores the parity images
    assert len(scorer.predict([scorer.prepare(image) for image in parity_images()[:2]])) == 2
    with pytest.raises(ExportError, match="drifts beyond"):
        export_onnx(model, processor, tmp_path / "refused", drift_images=images, drift_bounds={"min_srcc": 1.01},
                    log=lambda line: None, **kwargs)  # fmt: skip
    assert not (tmp_path / "refused").exists()
