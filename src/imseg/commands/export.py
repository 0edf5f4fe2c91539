"""``imseg export``: a run's chosen models (or given checkpoints) as ONNX files or
checkpoints, with metadata.json and a model card (README.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from imseg.commands.predict import add_model_options, describe_models, models_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export the models predict would use as ONNX (needs imseg[onnx]) or "
                       "checkpoints, with a model card",
        description="Writes OUT/model1.onnx ... (--run: best validation score first; "
                    "--checkpoint: in the order given; input 'image' "
                    "float32 N×C×H×W in 0..255, H and W multiples of 16; output "
                    "'probabilities') or, with --format checkpoint, OUT/model1.pt ... "
                    "(imseg predict --checkpoint takes them); OUT/metadata.json (task, "
                    "classes, colours, image size, how to turn probabilities into a mask, "
                    "scores, source checkpoints) and OUT/README.md, the model card (task, "
                    "input, data set, approach and teachers, scores and their spread, "
                    "settings, versions, the commands that reproduce it, how to run it).")
    add_model_options(p)
    p.add_argument("--format", default="onnx", choices=["onnx", "checkpoint"],
                   help="onnx: ONNX graphs (needs imseg[onnx]); checkpoint: imseg's own files")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from imseg.export import (
        CardSource,
        export_checkpoints,
        export_command,
        export_onnx,
        require_onnx,
        write_model_card,
    )

    if args.format == "onnx":
        require_onnx()  # before loading any model
    models = models_from_args(args)
    print(describe_models(models))
    write = export_onnx if args.format == "onnx" else export_checkpoints
    metadata = write(models, args.out)
    write_model_card(models, args.out, metadata,
                     CardSource(export_command(_argv(args)), args.run))
    files = ", ".join(m["file"] for m in metadata["models"])
    print(f"{files}, metadata.json and README.md (model card) in {args.out}")
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    """This export's arguments, spelled out (the card's command that repeats it)."""
    out = ["export"]
    if args.run is not None:
        out += ["--run", str(args.run)]
        for option in ("approach", "generation", "teachers"):
            if getattr(args, option) is not None:
                out += [f"--{option}", str(getattr(args, option))]
    for path in args.checkpoint or []:
        out += ["--checkpoint", str(path)]
    return out + ["--format", args.format, "--out", str(args.out)]
