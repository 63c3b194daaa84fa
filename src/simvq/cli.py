"""`simvq` console script.

Each subcommand lives beside the code it drives, in a module exposing ``add_parser(subparsers)``
that registers itself with ``set_defaults(func=...)``; ``func(args) -> int`` is the exit code.
Heavy imports (Lightning, matplotlib) happen inside ``func`` so ``simvq --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import linecache
import os
import sys
from pathlib import Path

COMMAND_MODULES = [
    "simvq.experiments.demo",
    "simvq.experiments.sweep",
    "simvq.experiments.report_command",
    "simvq.experiments.toy_cli",
    "simvq.export.commands",
    "simvq.train.commands",
    "simvq.train.prior_commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simvq", description="SimVQ tokenizers, baselines and benchmarks")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


# OS errors that say what is wrong with the user's files or machine even without a file name
USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOENT, errno.EEXIST,
               errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG}
PACKAGE_DIR = Path(__file__).resolve().parent


def user_error(error: BaseException) -> str | None:
    """The one line ``simvq`` prints for a failure the user caused (then exits with status 2), or None
    for anything else: a bug, shown with its traceback. The one place the command decides. A user's
    mistake is:

    - a ``simvq.utils.UsageError``, raised where a value the user gave is checked (it names the option,
      config key or argument);
    - a ``ValueError``, ``TypeError`` or ``OSError`` raised on purpose by a ``raise`` statement of simvq's
      own code: the library's checks of the values it is given (quantizer options, data sets, run
      files). The same classes raised anywhere else (inside torch, by Python on a bad call) are a
      check simvq lacks, i.e. a bug;
    - the operating system refusing a path (an ``OSError`` naming a file, or one of ``USER_ERRNOS``:
      permissions, a full or read-only disk, a missing file or a directory where a file was meant);
    - Lightning refusing the trainer's settings (``MisconfigurationException``: ``trainer.devices``,
      ``trainer.accelerator``); the recipes name the keys where they build the trainer.
    """
    from .utils import UsageError

    if isinstance(error, UsageError) or (isinstance(error, (ValueError, TypeError, OSError)) and raised_by_simvq(error)):
        return " ".join(str(error).split())  # one line, whatever the message's layout
    if isinstance(error, OSError) and (error.filename is not None or error.errno in USER_ERRNOS):
        names = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
        return f"{names}: {error.strerror or error}" if names else " ".join(str(error).split())
    lightning = sys.modules.get("lightning.fabric.utilities.exceptions")
    if lightning is not None and isinstance(error, lightning.MisconfigurationException):
        return "trainer: " + " ".join(str(error).split())
    return None


def raised_by_simvq(error: BaseException) -> bool:
    """Whether ``error`` comes from a ``raise`` statement in the simvq package (its innermost frame)."""
    trace = error.__traceback__
    if trace is None:
        return False
    while trace.tb_next is not None:
        trace = trace.tb_next
    filename = trace.tb_frame.f_code.co_filename
    try:
        inside = Path(filename).resolve().is_relative_to(PACKAGE_DIR)
    except (OSError, ValueError):
        return False
    return inside and linecache.getline(filename, trace.tb_lineno).lstrip().startswith("raise ")


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that ``section.key=value`` overrides may also follow a command's
    options (``simvq bench audio --budget 2000 eval.max_utterances=100``): argparse fills a
    positional list once, so overrides written after an option would otherwise be refused."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(item.startswith("-") or "=" not in item for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*(args.overrides or []), *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    try:
        return int(args.func(args) or 0)
    except Exception as error:  # sorted by user_error: anything that is not the user's mistake goes on, traceback and all
        message = user_error(error)
        if message is None or os.environ.get("SIMVQ_DEBUG"):  # SIMVQ_DEBUG=1: the traceback of a user's mistake too
            raise
        parser.exit(2, f"simvq {command_name(args)}: error: {message}\n")


def command_name(args: argparse.Namespace) -> str:
    """``train``, ``prior train``, ...: the words the user typed to name the command."""
    return f"{args.command} {args.action}" if getattr(args, "action", None) else args.command


if __name__ == "__main__":
    sys.exit(main())
