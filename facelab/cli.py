"""The ``facelab`` command line (also ``python -m facelab``).

Each subcommand lives in a module exposing ``configure(parser)`` and ``main(args) -> int`` (or, for
``"module:NAME"``, ``configure_NAME`` and ``NAME_main``); :data:`COMMANDS` maps the subcommand name
to that module and a one-line help.

Error policy: facelab's own errors (a bad argument, a missing or malformed file, a refused resume state:
:data:`USER_ERRORS`) are printed as one line ``facelab COMMAND: error: MESSAGE`` (the message names the
file, line or parameter and the fix) with exit code 2 and no traceback; ``--debug`` (anywhere on the
command line) or ``FACELAB_DEBUG=1`` re-raises them with the traceback. Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "assets": ("facelab.assets_cli", "fetch or verify the pinned model weights and photos"),
    "run": ("facelab.book.run", "run a chapter notebook headless with papermill into a run folder"),
    "book": ("facelab.book.build", "build the HTML book (Jupyter Book 1.x) into _build/html"),
    "train-detector": ("facelab.models.detection.cli", "train SLN/SSD/RetinaNet/Faster R-CNN on WIDER FACE"),
    "eval-detector": ("facelab.experiments.detector_eval", "evaluate a trained detector checkpoint on WIDER FACE val (AP, P/R@delta)"),
    "wider-eval": ("facelab.metrics.cli_wider", "official WIDER FACE val AP (easy/medium/hard/all) of a prediction folder"),
    "train-patch": ("facelab.experiments.train_patch", "train a universal adversarial patch on WIDER FACE (torchrun for several GPUs)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (so ``facelab --help`` stays fast)."""
    from facelab import __version__

    parser = argparse.ArgumentParser(
        prog="facelab",
        description="facelab: face models, adversarial attacks, defenses and the replication book.",
    )
    parser.add_argument("--version", action="version", version=f"facelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name != command:
            continue
        mod_name, _, suffix = module.partition(":")
        mod = importlib.import_module(mod_name)
        configure = getattr(mod, f"configure_{suffix}" if suffix else "configure")
        run = getattr(mod, f"{suffix}_main" if suffix else "main")
        configure(p)
        p.set_defaults(_main=run)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that report a user's mistake, not a bug (see the module docstring)."""
    from facelab.assets import AssetError

    # ValueError covers ParameterError, UnicodeDecodeError and every "<file>: ..." check of the loaders;
    # KeyError an unknown zoo name; OSError a missing / unreadable / unwritable file or folder
    return (ValueError, KeyError, OSError, AssetError)


def error_line(command: str | None, e: BaseException) -> str:
    """``facelab COMMAND: error: MESSAGE`` on one line (a KeyError's message without its quotes)."""
    msg = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
        msg = f"{e.filename}: {msg}"
    msg = " ".join(msg.split()) or type(e).__name__
    return f"facelab{' ' + command if command else ''}: error: {msg}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("FACELAB_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    parser.epilog = "--debug (anywhere) or FACELAB_DEBUG=1: show the traceback of an error"
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._main(args) or 0)
    except user_errors() as e:
        if debug:
            raise
        print(error_line(args.command, e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
