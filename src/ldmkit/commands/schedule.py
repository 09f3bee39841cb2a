"""``ldmkit schedule``: inspect noise schedules (``plot`` draws alpha-bar and SNR curves to a PNG)."""

from __future__ import annotations

import argparse

from ldmkit.commands._common import positive_int


def add_parser(sub, formatter_class):
    p = sub.add_parser("schedule", help="inspect noise schedules (plot alpha-bar and SNR)",
                       formatter_class=formatter_class)
    actions = p.add_subparsers(dest="schedule_command", metavar="ACTION")
    plot = actions.add_parser(
        "plot", help="draw alpha-bar and log10 SNR against t/T for one or more schedules",
        formatter_class=formatter_class,
        description="Example: ldmkit schedule plot linear cosine -o schedules.png",
    )
    plot.add_argument("names", nargs="+", metavar="NAME",
                      help="schedule names: linear, cosine, scaled_linear, sigmoid")
    plot.add_argument("-o", "--output", default="schedules.png", help="PNG file to write")
    plot.add_argument("-T", "--num-timesteps", type=positive_int, default=1000, help="number of diffusion steps T")
    plot.add_argument("--rescale-zero-terminal-snr", action="store_true",
                      help="apply Lin et al. 2024 zero-terminal-SNR rescaling to every schedule")
    plot.set_defaults(func=run_plot)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_plot(args) -> int:
    import numpy as np

    from ldmkit.diffusion.schedules import get_betas
    from ldmkit.training.plot import plot_schedules

    # before drawing anything: an unknown name is a ConfigError (exit 2)
    tables = {n: np.cumprod(1.0 - get_betas(n, args.num_timesteps,
                                            rescale_zero_terminal_snr=args.rescale_zero_terminal_snr))
              for n in args.names}
    path = plot_schedules(tables, args.output, note="zero terminal SNR" if args.rescale_zero_terminal_snr else None)
    for name, abar in tables.items():
        print(f"{name:>14}: alpha-bar_1 = {abar[0]:.6f}, alpha-bar_T/2 = {abar[len(abar) // 2 - 1]:.6f}, "
              f"alpha-bar_T = {abar[-1]:.3e}")
    print(f"wrote {path}")
    return 0
