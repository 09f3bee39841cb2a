"""``ldmkit generate "a pair of sneakers"``: text-to-image with the shipped text model, no training."""

from __future__ import annotations

import argparse

from ldmkit.commands._common import UsageError, add_sampling_arguments, positive_int

EPILOG = """examples:
  ldmkit generate "a pair of sneakers"                          # 16 images -> generate.png
  ldmkit generate "a photo of a bag" "an ankle boot" -n 8 -o two_rows.png   # one row per prompt
  ldmkit generate --prompts prompts.txt -n 8 --out-dir imgs/    # one PNG each, reproducible from its metadata
  ldmkit generate --class "sneaker,bag" -n 8                    # class names are prompts too
  ldmkit generate "a coat" --model RUN_DIR                      # your own text model
"""


def add_parser(sub, formatter_class):
    from ldmkit.zoo import DEFAULT_TEXT_MODEL

    p = sub.add_parser("generate", help="text-to-image with the shipped text model (or --model)",
                       formatter_class=formatter_class, epilog=EPILOG,
                       description="Generates images for one or more prompts with a text-conditional model: the "
                                   f"shipped {DEFAULT_TEXT_MODEL} (Fashion-MNIST, frozen MiniLM text encoder, "
                                   "see `ldmkit models`) unless --model names another. Several prompts (or a "
                                   "--prompts file) give one row each. Image i uses seed --seed + i; output "
                                   "options as in `ldmkit sample`.")
    p.add_argument("prompt", nargs="*", help="one or more prompts (quote each)")
    p.add_argument("--prompts", default=None, metavar="FILE", help="a text file with one prompt per line")
    p.add_argument("--class", dest="classes", default=None, metavar="NAMES",
                   help='comma-separated class names or indices instead of prompts, one row each')
    p.add_argument("--model", default=DEFAULT_TEXT_MODEL, metavar="NAME_OR_DIR",
                   help="a shipped model's name or a checkpoint / run folder of a text model")
    p.add_argument("-n", "--num", type=positive_int, default=None,
                   help="images per prompt (default 16 for one prompt, 8 per row for several)")
    add_sampling_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="image i (over all rows) uses seed + i")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("-o", "--grid", default=None, help="grid PNG (default generate.png when no output is given)")
    p.add_argument("--out-dir", help="one PNG per image, with the settings to reproduce it as metadata")
    p.add_argument("--npz", help="the images as .npz (uint8 [N, H, W, C], key images)")
    p.set_defaults(func=run)


def rows(args) -> tuple[list[str] | None, str | None]:
    """The prompts (one per row) or the class names, checked: exactly one source, none empty."""
    from ldmkit.commands._common import read_prompts

    given = [name for name, v in (("PROMPT", args.prompt), ("--prompts", args.prompts), ("--class", args.classes))
             if v]
    if len(given) != 1:
        raise UsageError(f"give prompts as arguments, --prompts FILE or --class NAMES (exactly one; got "
                         f"{', '.join(given) or 'none'})")
    if args.classes:
        return None, args.classes
    prompts = list(args.prompt) if args.prompt else read_prompts(None, args.prompts)
    empty = [i for i, p in enumerate(prompts) if not p.strip()]
    if empty and args.prompt:
        raise UsageError(f"PROMPT: prompt {empty[0] + 1} is empty; `ldmkit sample MODEL --prompt ''` draws "
                         "unconditional images")
    return prompts, None


def run(args) -> int:
    """``ldmkit sample`` with each prompt (or class) repeated over its row; ``sample`` loads the model and
    checks the request (an unknown class, a model without text: exit 2 naming the option)."""
    from ldmkit.commands import sample

    prompts, classes = rows(args)
    names = [c.strip() for c in classes.split(",") if c.strip()] if classes is not None else prompts
    if not names:
        raise UsageError(f"--class {classes!r}: no class name given")
    per_row = args.num or (16 if len(names) == 1 else 8)
    expanded = [v for v in names for _ in range(per_row)]
    forwarded = argparse.Namespace(**{**vars(args), "checkpoint": args.model, "num": len(expanded),
                                      "labels": None, "prompt": None, "prompts": None, "layout": None,
                                      "size": None, "no_ema": False, "from_png": None,
                                      "classes": ",".join(expanded) if classes is not None else None,
                                      "prompt_list": expanded if classes is None else None,
                                      "grid_nrow": per_row if len(names) > 1 else None})
    if not (args.grid or args.out_dir or args.npz):
        forwarded.grid = "generate.png"
    return sample.run(forwarded)
