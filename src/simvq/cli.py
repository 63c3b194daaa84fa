"""`simvq` console script.

Each subcommand lives beside the code it drives, in a module exposing ``add_parser(subparsers)``
that registers itself with ``set_defaults(func=...)``; ``func(args) -> int`` is the exit code.
Heavy imports (Lightning, matplotlib) happen inside ``func`` so ``simvq --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

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


# what a user's mistake raises (a bad option value, a missing file): one line, exit status 2;
# SIMVQ_DEBUG=1 shows the traceback
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, PermissionError)


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
    except USER_ERRORS as error:
        if os.environ.get("SIMVQ_DEBUG"):
            raise
        message = " ".join(str(error).split())  # one line, whatever the message's layout
        parser.exit(2, f"simvq {args.command}: error: {message}\n")


if __name__ == "__main__":
    sys.exit(main())
