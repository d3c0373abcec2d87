"""Tiny random models of each exportable family, exported once per session (tests/onnx only)."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def tiny_model_and_processor(family: str):
    from tests.models.test_modeling_common import build_liqe, build_qualiclip, build_uniqa

    if family == "liqe":
        from hf_iqa.models.liqe import LiqeImageProcessor

        return build_liqe(), LiqeImageProcessor(patch_size=32, num_patches=3)
    if family == "qualiclip":
        from hf_iqa.models.qualiclip import QualiClipImageProcessor

        return build_qualiclip(), QualiClipImageProcessor()
    from hf_iqa.models.uniqa import UniQaImageProcessor

    return build_uniqa(), UniQaImageProcessor(crop_size={"height": 32, "width": 32}, num_crops=3)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """family -> (model, processor, exported folder)."""
    from hf_iqa.onnx.export import export_onnx

    folders = {}
    for family in ("liqe", "qualiclip", "uniqa"):
        model, processor = tiny_model_and_processor(family)
        folder = tmp_path_factory.mktemp("onnx") / family
        export_onnx(model, processor, folder, source=f"tiny-{family}", log=lambda line: None)
        folders[family] = (model, processor, folder)
    return folders
