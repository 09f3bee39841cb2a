"""The ``ldmkit`` command line: parses arguments and hands over to one command module.

Each command lives in ``ldmkit.commands.<name>`` and exposes ``add_parser(subparsers)``, which
registers its sub-parser and sets ``func`` to a ``run(args) -> int`` function. Command modules import
heavy dependencies inside ``run`` so that ``ldmkit --help`` stays fast. ``run`` reports failure by raising;
:func:`ldmkit.commands._common.run_command` maps the exception to the one exit-code policy (usage 2,
runtime 1) and prints ``error: ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ldmkit.commands import COMMAND_MODULES
from ldmkit.commands._common import EXIT_USAGE, run_command


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps description line breaks; a ``None`` default is left to the help text (it
    means "from the config" or "off", which the help says)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


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
    """Parse ``argv``, run one command and return its exit code (policy: ``ldmkit.commands._common``).

    Argument errors return 2 (argparse's message names the argument) instead of raising ``SystemExit``.
    """
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        # Commands that accept dotted overrides (--train.lr=2e-4) declare `accepts_overrides`.
        if extra and not getattr(args, "accepts_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help (0) or a usage error (2), already printed by argparse
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    args.overrides = extra
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
