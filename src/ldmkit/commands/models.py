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


def headline(card: dict) -> str:
    """The one figure that says how good a model is, from its card's evaluation results."""
    results = (card.get("evaluation") or {}).get("results")
    if not results:
        return "-"
    if "psnr_db" in results:
        return f"PSNR {results['psnr_db']:.1f} dB, rFID {results['rfid']:.2f} (N={results['num']})"
    if "rows" in results and results.get("task") == "sr":
        r = results["rows"][-1]
        fid = next(k for k in r if k.startswith("FID"))
        return f"PSNR {r['PSNR (dB)']} dB, {fid} {r[fid]}"
    if "rows" in results and results.get("task") == "inpaint":
        r = next((r for r in results["rows"] if r["method"].startswith("trained")), results["rows"][0])
        fid = next(k for k in r if k.startswith("FID"))
        return f"{r['masks']} masks: {fid} {r[fid]}"
    if isinstance(results, list) and results and "accuracy" in results[0]:
        r = results[-1]
        return f"held-out prompts in class {100 * r['accuracy']:.1f}%, FID {r['fid']:.2f} (N={r.get('num_samples', '?')}, guidance {r.get('guidance_scale')})"
    if isinstance(results, dict) and "samples" in results:
        s = results["samples"]
        return f"boxes right {100 * s.get('both', 0):.0f}%, mean IoU {s.get('mean_iou', 0):.2f}"
    return "-"


def run(args) -> int:
    import json

    from ldmkit import zoo

    cards = []
    for name in zoo.SHIPPED:
        card = {"name": name, "task": zoo.SHIPPED[name][1], "installed": name in zoo.available(), **zoo.card(name)}
        cards.append(card)
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
        rows.append((c["name"], c["task"], params, size, trained, headline(c)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0
