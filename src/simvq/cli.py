"""`simvq` console script.

Each subcommand lives beside the code it drives, in a module exposing ``add_parser(subparsers)``
that registers itself with ``set_defaults(func=...)``; ``func(args) -> int`` is the exit code.
Heavy imports (Lightning, matplotlib) happen inside ``func`` so ``simvq --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "simvq.experiments.demo",
    "simvq.experiments.sweep",
    "simvq.experiments.toy_cli",
    "simvq.train.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simvq", description="SimVQ tokenizers, baselines and benchmarks")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
