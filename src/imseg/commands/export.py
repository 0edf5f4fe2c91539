"""``imseg export``: a run's chosen models (or given checkpoints) as ONNX files + metadata.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from imseg.commands.predict import add_model_options, describe_models, models_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export the models predict would use as ONNX (needs imseg[onnx])",
        description="Writes OUT/model1.onnx ... (--run: best validation score first; "
                    "--checkpoint: in the order given; input 'image' "
                    "float32 N×C×H×W in 0..255, H and W multiples of 16; output "
                    "'probabilities') and OUT/metadata.json (task, classes, colours, image "
                    "size, how to turn probabilities into a mask, scores, source checkpoints).")
    add_model_options(p)
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from imseg.export import export_onnx, require_onnx

    require_onnx()  # before loading any model
    models = models_from_args(args)
    print(describe_models(models))
    metadata = export_onnx(models, args.out)
    files = ", ".join(m["file"] for m in metadata["models"])
    print(f"{files} and metadata.json in {args.out}")
    return 0
