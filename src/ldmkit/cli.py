"""The ``ldmkit`` command line: parses arguments and hands over to one command module.

Each command lives in ``ldmkit.commands.<name>`` and exposes ``add_parser(subparsers)``, which
registers its sub-parser and sets ``func`` to a ``run(args) -> int`` function. Command modules import
heavy dependencies inside ``run`` so that ``ldmkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ldmkit.commands import COMMAND_MODULES


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps description line breaks."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldmkit",
        description="Train, sample and evaluate DDPM, Improved DDPM and Latent Diffusion models.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parser(sub, HelpFormatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    # Commands that accept dotted overrides (--train.lr=2e-4) declare `accepts_overrides`.
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `ldmkit info RUN | head`: the reader went away, not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
