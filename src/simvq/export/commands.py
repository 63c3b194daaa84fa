"""``simvq export-hf RUN DIR`` and ``simvq export-onnx RUN [--out DIR]``."""

from __future__ import annotations

import json


def _export_hf(args) -> int:
    from ..runs.pretrained import export_run, push_to_hub

    directory = export_run(args.run, args.dir)
    print(f"hub layout: {directory}")
    if args.push_to_hub:
        print(f"pushed: {push_to_hub(directory, args.push_to_hub, private=args.private)}")
    return 0


def _export_onnx(args) -> int:
    from .onnx import check_onnx, export_onnx

    if args.check is not None and args.check < 1:
        raise ValueError(f"--check takes a number of test items >= 1, got {args.check}")
    out = export_onnx(args.run, args.out, opset=args.opset)
    print(f"onnx graphs: {out}")
    if args.check:
        report = check_onnx(args.run, out, count=args.check)
        print(json.dumps(report, indent=2))
        if not (report["codes_equal"] and report["decode_within_tolerance"]):
            print("the ONNX graphs disagree with PyTorch (see above)")
            return 1
    return 0


def add_parser(subparsers) -> None:
    hub = subparsers.add_parser(
        "export-hf",
        help="a run directory (tokenizer or prior) in Hugging Face Hub's layout: config.json, model.safetensors, README.md",
        description="Convert a trained run to the layout Tokenizer.from_pretrained (or load_pretrained_prior) reads: "
        "config.json + model.safetensors + a model card README.md with its metrics; a prior gets its tokenizer in DIR/tokenizer. "
        "Example: simvq export-hf runs/fmnist hub/fmnist-simvq --push-to-hub me/fmnist-simvq",
    )
    hub.add_argument("run", help="a tokenizer run directory (or its weights file), or a prior run directory")
    hub.add_argument("dir", help="the directory to write (created; files in it are replaced)")
    hub.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="then upload DIR to this Hub repo (needs the network and a token)")
    hub.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    hub.set_defaults(func=_export_hf)

    onnx = subparsers.add_parser(
        "export-onnx",
        help="encode.onnx + decode.onnx of an image or audio tokenizer run (dynamic batch; dynamic length for audio)",
        description="Export the tokenizer's encoder + exact nearest-code search and its decoder as ONNX graphs, with onnx.json "
        "(shapes, names, tolerance). --check N runs onnxruntime on N test items and compares codes and decoded outputs with PyTorch. "
        "Example: simvq export-onnx runs/fmnist --check 256",
    )
    onnx.add_argument("run", help="the run directory (or its model.safetensors / checkpoints/last.ckpt)")
    onnx.add_argument("--out", default=None, help="output folder (default: RUN/onnx)")
    onnx.add_argument("--check", type=int, default=None, metavar="N", help="compare with PyTorch on the first N test items (onnxruntime)")
    onnx.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    onnx.set_defaults(func=_export_onnx)
