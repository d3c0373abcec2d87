"""`hf-iqa demo [--model M ...] [--host H] [--port P] [--share] [--max-pixels N] [--no-exif-transpose]`: the web app.

Only the words live here; the app is `hf_iqa.demo`, imported (with Gradio) when the command runs, so that
`hf-iqa demo --help` answers at once."""

from __future__ import annotations

import argparse
import os

from hf_iqa.commands.options import add_orientation_argument

DEFAULT_MODELS = ["liqe-mix"]  # hf_iqa.demo.DEFAULT_MODELS, kept here so that --help imports nothing heavy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", action="append", metavar="NAME_OR_FOLDER",
                        help=f"model to offer and preload (repeatable; default: {', '.join(DEFAULT_MODELS)})")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="largest upload scored, width x height as its file declares it (default 89478485, as "
                        "`hf-iqa score`; 0: no limit); bigger uploads are reported in the page")  # fmt: skip
    add_orientation_argument(parser, "default: turned")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("hf-iqa demo: needs Gradio: pip install 'hf-iqa[demo]'", flush=True)
        return 2
    from hf_iqa import demo

    demo.launch(args.model, host=args.host, port=args.port, share=args.share, max_pixels=args.max_pixels,
                exif_transpose=args.exif_transpose is not False)  # fmt: skip
    return 0
