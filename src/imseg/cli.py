"""Command line: parse, call one function, print user errors without a traceback."""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from pathlib import Path

from imseg import __version__
from imseg.errors import ImsegError
from imseg.logs import note_failure_in_run_log, note_in_run_log, setup_logging, stop_run_log
from imseg.storage import storage_error

WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
"""OSErrors that mean 'cannot write the output': one message, no traceback."""

# Each module registers its own `imseg prepare <name>` sub-command through
# ``register(subparsers)``; adding a data source means adding its module here.
PREPARE_SOURCES = (
    "imseg.data.sources.sample",
    "imseg.data.sources.folder",
    "imseg.data.sources.coco",
    "imseg.data.sources.labelme",
    "imseg.data.sources.isic2018",
    "imseg.data.sources.hela",
    "imseg.data.sources.suim",
    "imseg.data.sources.cityscapes",
    "imseg.active.add",
)

# Top-level commands: module with ``register(subparsers)``.
COMMANDS = (
    "imseg.commands.train",
    "imseg.commands.run",
    "imseg.commands.demo",
    "imseg.commands.report",
    "imseg.commands.predict",
    "imseg.commands.export",
    "imseg.commands.suggest",
)


def _optional_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:  # not written yet: leave the command out
            return None
        raise


def version_line() -> str:
    """``imseg 0.1.0 (torch 2.13.0, CUDA 12.4 / CPU only, Python 3.11.7)``."""
    import torch

    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
    python = ".".join(str(v) for v in sys.version_info[:3])
    return f"imseg {__version__} (torch {torch.__version__}, {cuda}, Python {python})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imseg",
        description="Semi-supervised segmentation with Inconsistency Masks.",
    )
    parser.add_argument("--version", action="version", version=version_line(),
                        help="imseg's, torch's and Python's versions (for bug reports)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prepare = sub.add_parser("prepare", help="turn a source into the prepared layout")
    prepare_sub = prepare.add_subparsers(dest="source", required=True, metavar="SOURCE")
    for name in PREPARE_SOURCES:
        module = _optional_module(name)
        if module is not None:
            module.register(prepare_sub)
    for name in COMMANDS:
        module = _optional_module(name)
        if module is not None:
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    try:
        return int(args.func(args) or 0)
    except ImsegError as exc:
        return _stop(f"imseg: error: {exc}", 2)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            note_failure_in_run_log(exc)
            raise
        return _stop(f"imseg: error: {storage_error(Path(exc.filename or '?'), exc)}", 2)
    except KeyboardInterrupt:
        return _stop("imseg: stopped; run the same command again to resume", 130)
    except Exception as exc:
        note_failure_in_run_log(exc)
        raise
    finally:
        stop_run_log()  # the command is over: a later one (tests, notebooks) logs elsewhere


def _stop(message: str, code: int) -> int:
    """Say why the command stopped, on stderr and in the run folder's log."""
    print(message, file=sys.stderr)
    note_in_run_log(message)
    return code


if __name__ == "__main__":
    sys.exit(main())
