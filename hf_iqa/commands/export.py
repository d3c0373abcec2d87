"""`hf-iqa export onnx`: write a folder that onnxruntime scores without torch (see `hf_iqa/onnx/export.py`)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=["onnx"], help="the export format")
    parser.add_argument("--model", required=True, help="zoo name (hf-iqa list), folder or Hub id")
    parser.add_argument("--output-dir", required=True, help="the folder to write (must be new or empty)")
    parser.add_argument("--quantize", choices=["dynamic-int8"], help="save the int8 variant (onnxruntime dynamic)")
    parser.add_argument("--fp16", action="store_true", help="save the fp16 variant (inputs and outputs stay fp32)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="config option at load time, e.g. task=aesthetics for UniQA (repeatable)")  # fmt: skip
    parser.add_argument("--processor-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="image-processor setting saved with the export, e.g. protocol=pyiqa (repeatable)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from hf_iqa import scoring

    try:
        model_kwargs = scoring.parse_key_values(args.model_arg, "--model-arg")
        processor_kwargs = scoring.parse_key_values(args.processor_arg, "--processor-arg")
        from transformers import AutoImageProcessor, AutoModel

        from hf_iqa.onnx.export import export_onnx
        from hf_iqa.zoo import resolve

        source = resolve(args.model)
        model = AutoModel.from_pretrained(source, dtype="float32", **model_kwargs).eval()
        processor = AutoImageProcessor.from_pretrained(source, **processor_kwargs)
        export_onnx(model, processor, args.output_dir, quantize=args.quantize, fp16=args.fp16,
                    overwrite=args.overwrite, source=args.model, log=lambda line: print(line, file=sys.stderr))  # fmt: skip
    except (ImportError, ValueError, TypeError) as error:
        print(f"hf-iqa export: error: {scoring.root_cause(error)}", file=sys.stderr)
        return 2
    return 0
