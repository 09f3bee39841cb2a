"""``ldmkit data info SOURCE``: what a dataset holds, a preview grid, and (for folders) a check of every file.
``ldmkit data export SOURCE --out DIR``: the dataset's images as PNG files that the image-folder dataset reads back."""

from __future__ import annotations

import sys

from ldmkit.commands._common import EXIT_USAGE, positive_int

SOURCES = ("fashion-mnist", "shapes", "fashion-collage")
EXAMPLES = """examples:
  ldmkit data info fashion-mnist
  ldmkit data info shapes --grid shapes.png --n 16 --scale 4
  ldmkit data info fashion-collage --grid collage.png --n 16 --scale 4   (boxes and labels drawn)
  ldmkit data info path/to/images --size 64 --grid preview.png   (opens every image: a data checker)
"""
EXPORT_EXAMPLES = """examples:
  ldmkit data export shapes --out shapes_png -n 50000      (DIR/000000.png ... plus DIR/captions.jsonl)
  ldmkit data export fashion-mnist --out fmnist_png        (DIR/0_T-shirt-top/000000.png ...: labels)
train a recipe on the RGB folder, e.g.:
  ldmkit train-ldm configs/ldm_fast_fmnist.yaml --minutes 30 --out runs/shapes_folder --data.name=folder \\
    --data.root=shapes_png --data.pad_to=null --data.image_size=32 --autoencoder.model.in_channels=3 \\
    --autoencoder.loss.perceptual=none --evaluation.reference=data:train
"""


def add_parser(sub, formatter_class):
    p = sub.add_parser("data", help="inspect and check datasets", formatter_class=formatter_class,
                       description="Inspect and check datasets.")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), EXIT_USAGE)[1])
    info = actions.add_parser(
        "info", help="count, size, channels, labels and captions of a dataset; optional preview grid",
        formatter_class=formatter_class, epilog=EXAMPLES,
        description="Print what a dataset holds. SOURCE is 'fashion-mnist', 'shapes', 'fashion-collage' or an image folder. On a "
                    "folder every image is opened, and any bad file makes the command exit with status 1.")
    info.add_argument("source", metavar="SOURCE", help="fashion-mnist, shapes, fashion-collage, or a directory of images")
    info.add_argument("--split", default=None,
                      help="split to show (default: train and test for fashion-mnist, train for shapes)")
    info.add_argument("--root", default=None, help="Fashion-MNIST directory (default: $LDMKIT_FMNIST_DIR or "
                                                   "/usr/share/datasets/fashion-mnist)")
    info.add_argument("--grid", metavar="FILE", default=None, help="write a preview grid PNG of the first N images")
    info.add_argument("--n", type=positive_int, default=64, help="images in the preview grid")
    info.add_argument("--nrow", type=positive_int, default=8, help="images per grid row")
    info.add_argument("--scale", type=positive_int, default=1,
                      help="enlarge the grid by this factor (nearest neighbour)")
    info.add_argument("--captions", type=int, default=5, help="captions to print")
    info.add_argument("--boxes", action="store_true", help="shapes: outline each object's box on the grid "
                                                           "(fashion-collage: always); labels at --scale >= 4")
    info.add_argument("--size", type=positive_int, default=None,
                      help="resize + center-crop folder images (and shapes) to this size; folder grids default to 64")
    info.add_argument("--channels", type=int, default=3, choices=(1, 3), help="channels for folder images")
    info.add_argument("--skip-bad", action="store_true", help="folder: report bad files but exit 0")
    info.add_argument("--max-pixels", type=positive_int, default=64_000_000, help="folder: refuse images with more pixels")
    info.add_argument("--labels", choices=("auto", "yes", "no"), default="auto",
                      help="folder: labels from sub-folder names")
    info.add_argument("--seed", type=int, default=0, help="shapes: generator seed")
    info.add_argument("--length", type=positive_int, default=50_000, help="shapes: dataset length to report")
    info.set_defaults(func=run_info)
    export = actions.add_parser(
        "export", help="write a dataset's images as PNG files (an image folder for data.name=folder)",
        formatter_class=formatter_class, epilog=EXPORT_EXAMPLES,
        description="Write the first N images of a dataset as DIR/000000.png, ... (uint8, lossless). Labelled "
                    "datasets go into one sub-folder per class, named '<index>_<name>' so that the folder "
                    "dataset reads back the same label indices (when every class occurs among the N); captions go to DIR/captions.jsonl. A folder that "
                    "already holds anything is refused (exit 2, naming a file there): nothing is overwritten.")
    export.add_argument("source", metavar="SOURCE", help="fashion-mnist, shapes, fashion-collage, or a directory "
                                                         "of images")
    export.add_argument("--out", required=True, metavar="DIR", help="folder to write (created if missing)")
    export.add_argument("-n", type=positive_int, default=None,
                        help="images to write (default: all; shapes and fashion-collage: --length)")
    export.add_argument("--split", default="train", help="split to export")
    export.add_argument("--root", default=None, help="Fashion-MNIST directory (default: $LDMKIT_FMNIST_DIR or "
                                                     "/usr/share/datasets/fashion-mnist)")
    export.add_argument("--size", type=positive_int, default=None,
                        help="image size (shapes: default 32; folders: resize + center-crop, default native)")
    export.add_argument("--channels", type=int, default=None, choices=(1, 3), help="folder: channels (default 3)")
    export.add_argument("--seed", type=int, default=0, help="shapes, fashion-collage: generator seed")
    export.add_argument("--length", type=positive_int, default=50_000,
                        help="shapes, fashion-collage: dataset length when -n is not given")
    export.set_defaults(func=run_export)


def run_info(args) -> int:
    """Exit 2 when a folder holds bad files (unless --skip-bad: 0), naming each; other errors follow the CLI's
    exit-code policy (a missing folder or a bad option: 2)."""
    if args.source == "fashion-mnist":
        return _info_fashion_mnist(args)
    if args.source == "shapes":
        return _info_shapes(args)
    if args.source == "fashion-collage":
        return _info_collage(args)
    return _info_folder(args)


def run_export(args) -> int:
    """Refuses (exit 2, naming a file there) to write into a folder that already holds anything."""
    import json
    import re
    from pathlib import Path

    from PIL import Image

    from ldmkit.commands._common import UsageError
    from ldmkit.data import DataConfig, as_item, build_dataset, class_names
    from ldmkit.images import to_uint8

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    existing = next(iter(sorted(out.iterdir())), None) if out.is_dir() else None
    if existing is not None:
        raise UsageError(f"--out {out} already holds {existing}; export into an empty or new folder "
                         "(nothing is overwritten)")
    named = args.source in SOURCES
    cfg = DataConfig(name=args.source if named else "folder", root=args.root if named else args.source,
                     split=args.split, image_size=args.size, channels=args.channels, seed=args.seed,
                     length=args.n or args.length)
    ds = build_dataset(cfg)
    n = min(args.n or len(ds), len(ds))
    names = class_names(cfg) or getattr(ds, "class_names", None) or ()
    width = len(str(max(len(names) - 1, 0)))
    captions, classes, shape = {}, set(), None
    for i in range(n):
        item = as_item(ds[i], i)
        arr = to_uint8(item["image"])  # [H, W, C], exactly the dataset's uint8 pixels
        shape = arr.shape
        file = f"{i:06d}.png"
        if "label" in item:  # '<k>_<name>' folders sort in label order: the folder dataset reads back k
            k = int(item["label"])
            name = re.sub(r"[^\w.-]+", "-", names[k]) if k < len(names) else ""
            file = f"{k:0{width}d}_{name}".rstrip("_") + "/" + file
            classes.add(k)
        if item.get("caption"):
            captions[file] = item["caption"]
        (out / file).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(out / file, format="PNG")
    if captions:
        (out / "captions.jsonl").write_text("".join(json.dumps({"file": f, "text": t}) + "\n"
                                                    for f, t in captions.items()), encoding="utf-8")
    print(f"wrote {n} images of {shape[0]}x{shape[1]}x{shape[2]} to {out}"
          + (f" in {len(classes)} class folders" if classes else "")
          + (f"; {len(captions)} captions in {out / 'captions.jsonl'}" if captions else ""))
    return 0


def _print_classes(names, counts=None) -> None:
    for k, name in enumerate(names):
        suffix = f"  ({counts[k]} images)" if counts is not None else ""
        print(f"  {k:3d}  {name}{suffix}")


def _info_fashion_mnist(args) -> int:
    import numpy as np

    from ldmkit.data import CLASS_NAMES, FashionMNIST
    from ldmkit.data.fashion_mnist import resolve_dir

    splits = [args.split] if args.split else ["train", "test"]
    print(f"source:   fashion-mnist ({resolve_dir(args.root)})")
    datasets = {s: FashionMNIST(s, root=args.root) for s in splits}
    for s, ds in datasets.items():
        print(f"split:    {s}: {len(ds)} images of {ds.size}x{ds.size}x1")
    print("values:   float in [-1, 1] (uint8 / 127.5 - 1)")
    print("captions: no; boxes: no")
    first = datasets[splits[0]]
    counts = np.bincount(first.labels.numpy(), minlength=len(CLASS_NAMES))
    print(f"labels:   yes, {len(CLASS_NAMES)} classes (counts in {splits[0]}):")
    _print_classes(CLASS_NAMES, counts)
    if args.grid:
        images, labels = first.tensors()
        n = min(args.n, len(first))
        _write_grid(args, images[:n], {"source": "fashion-mnist", "split": splits[0],
                                       "labels": [CLASS_NAMES[int(v)] for v in labels[:n]]})
    return 0


def _info_shapes(args) -> int:
    from ldmkit.data import COLOR_NAMES, SHAPE_NAMES, Shapes, collate

    split = args.split or "train"
    ds = Shapes(args.length, args.size or 32, seed=args.seed, split=split)
    print(f"source:   shapes (synthetic, seed {args.seed}, split {split}; items exist for every index >= 0)")
    print(f"count:    {len(ds)} (set with --length)")
    print(f"image:    {ds.size}x{ds.size}x3, float in [-1, 1]")
    print("labels:   no; captions: yes; boxes: yes (x0, y0, x1, y1 in [0, 1]) with shape labels and colours")
    print(f"shapes:   {', '.join(f'{k} {n}' for k, n in enumerate(SHAPE_NAMES))}")
    print(f"colours:  {', '.join(f'{k} {n}' for k, n in enumerate(COLOR_NAMES))}")
    print("captions (first ones):")
    for i in range(min(args.captions, len(ds))):
        print(f"  [{i}] {ds.scene(i).caption}")
    if args.grid:
        n = min(args.n, len(ds))
        batch = collate([ds[i] for i in range(n)])
        names = [[f"{COLOR_NAMES[c]} {SHAPE_NAMES[k]}" for k, c in zip(kinds.tolist(), colors.tolist(), strict=True)]
                 for kinds, colors in zip(batch.box_labels, batch.extra["box_colors"], strict=True)]
        _write_grid(args, batch.images, {"source": "shapes", "seed": args.seed, "split": split,
                                         "captions": batch.captions}, boxes=batch.boxes if args.boxes else None,
                    box_names=names)
        print("grid captions (row, column):")
        for i, caption in enumerate(batch.captions):
            print(f"  ({i // args.nrow}, {i % args.nrow}) {caption}")
    return 0


def _info_collage(args) -> int:
    from ldmkit.data import CLASS_NAMES, collate
    from ldmkit.data.fashion_collage import SIZE, FashionCollage
    from ldmkit.data.fashion_mnist import resolve_dir

    split = args.split or "train"
    ds = FashionCollage(args.length, seed=args.seed, split=split, root=args.root)
    print(f"source:   fashion-collage (2-4 Fashion-MNIST {split} items from {resolve_dir(args.root)}, seed "
          f"{args.seed}; items exist for every index >= 0)")
    print(f"count:    {len(ds)} (set with --length)")
    print(f"image:    {SIZE}x{SIZE}x1, float in [-1, 1]")
    print("labels:   no; captions: yes; boxes: yes (x0, y0, x1, y1 in [0, 1], each item's tight box) with "
          "Fashion-MNIST class labels:")
    _print_classes(CLASS_NAMES)
    print("captions (first ones):")
    for i in range(min(args.captions, len(ds))):
        print(f"  [{i}] {ds.collage(i).caption}")
    if args.grid:
        n = min(args.n, len(ds))
        batch = collate([ds[i] for i in range(n)])
        names = [[CLASS_NAMES[k] for k in labels.tolist()] for labels in batch.box_labels]
        _write_grid(args, batch.images, {"source": "fashion-collage", "seed": args.seed, "split": split,
                                         "captions": batch.captions, "boxes": [b.tolist() for b in batch.boxes],
                                         "box_labels": names}, boxes=batch.boxes, box_names=names)
    return 0


def _info_folder(args) -> int:
    from ldmkit.data import ImageFolder, collate, load_image

    labels = {"auto": None, "yes": True, "no": False}[args.labels]
    ds = ImageFolder(args.source, args.size, args.channels, labels=labels, skip_bad=True,
                     max_pixels=args.max_pixels, cache=False, progress=sys.stderr.isatty())
    total = len(ds) + len(ds.bad_files)
    print(f"source:   folder {ds.root}")
    print(f"count:    {len(ds)} good images of {total} image files")
    widths = [w for w, _ in ds.native_sizes]
    heights = [h for _, h in ds.native_sizes]
    print(f"native:   width {min(widths)}-{max(widths)}, height {min(heights)}-{max(heights)}; modes "
          + ", ".join(f"{m} {c}" for m, c in sorted(ds.native_modes.items())))
    size = f"{ds.size}x{ds.size}" if ds.size else "native size"
    print(f"image:    {size}x{ds.channels} after resize + center-crop (set with --size, --channels)")
    if ds.class_names:
        counts = [0] * len(ds.class_names)
        for rec in ds.records:
            counts[rec.label] += 1
        print(f"labels:   yes, {len(ds.class_names)} classes from sub-folder names:")
        _print_classes(ds.class_names, counts)
    else:
        print("labels:   no")
    if ds.has_captions:
        with_caption = [r for r in ds.records if r.caption]
        print(f"captions: {len(with_caption)} of {len(ds)} images have one")
        for r in with_caption[:args.captions]:
            print(f"  {r.path}: {r.caption}")
    else:
        print("captions: no")
    if args.grid:
        n = min(args.n, len(ds))
        if ds.size:
            images = collate([ds[i] for i in range(n)]).images
        else:  # native sizes differ: preview at 64 pixels
            images = [load_image(ds.path(i), size=64, channels=ds.channels, max_pixels=ds.max_pixels)
                      for i in range(n)]
        _write_grid(args, images, {"source": str(ds.root), "files": [r.path for r in ds.records[:n]]})
    for path, reason in ds.bad_files:
        print(f"error: {path}: {reason}", file=sys.stderr)
    if ds.bad_files:
        verdict = "skipped (--skip-bad)" if args.skip_bad else "fix or remove them, or pass --skip-bad"
        print(f"{len(ds.bad_files)} bad image file(s): {verdict}", file=sys.stderr)
        return 0 if args.skip_bad else EXIT_USAGE
    return 0


def _write_grid(args, images, metadata: dict, boxes=None, box_names=None) -> None:
    from PIL import Image

    from ldmkit.images import boxed_grid, make_grid, save_png

    padding = 2
    scale = max(1, args.scale)
    if boxes is not None:  # outline boxes (x0, y0, x1, y1 in [0, 1]); names readable from --scale 4 on
        pil = boxed_grid(images, boxes, box_names if scale >= 4 else None, nrow=args.nrow, padding=padding,
                         pad_value=128, scale=scale)
    else:
        grid = make_grid(images, nrow=args.nrow, padding=padding, pad_value=128)
        h, w = grid.shape[:2]
        pil = Image.fromarray(grid if grid.shape[-1] != 1 else grid[..., 0])
        if scale > 1:
            pil = pil.resize((w * scale, h * scale), Image.Resampling.NEAREST)
    path = save_png(args.grid, pil, metadata)
    print(f"grid:     {path} ({len(images)} images, {args.nrow} per row)")
