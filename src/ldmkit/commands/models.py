"""``ldmkit models``: the shipped pretrained models, with their task, size, training and measured figures."""

from __future__ import annotations


def add_parser(sub, formatter_class):
    p = sub.add_parser("models", help="list the shipped pretrained models (names usable as CKPT_DIR)",
                       formatter_class=formatter_class,
                       description="Every shipped model, from the registry (ldmkit.zoo) and the model.json card "
                                   "written by scripts/train_pretrained.py. Any command that takes a checkpoint "
                                   "folder takes these names. Figures: docs/models.md.")
    p.add_argument("--json", action="store_true", help="print the cards as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from ldmkit import zoo

    installed = zoo.available()
    cards = [{"name": name, "task": task, "installed": name in installed, **zoo.card(name)}
             for name, (_, task) in zoo.SHIPPED.items()]
    if args.json:
        print(json.dumps(cards, indent=2))
        return 0
    rows = [("name", "task", "params", "MB", "trained", "measured")]
    for c in cards:
        if not c["installed"]:
            rows.append((c["name"], c["task"], "-", "-", "not installed", "-"))
            continue
        params = f"{c['parameters'] / 1e6:.1f}M" if "parameters" in c else "-"
        size = f"{c['bytes'] / 1e6:.1f}" if "bytes" in c else "-"
        trained = f"{c['steps']} steps, {c['train_minutes']} min" if "steps" in c else "-"
        rows.append((c["name"], c["task"], params, size, trained, zoo.headline(c)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0
