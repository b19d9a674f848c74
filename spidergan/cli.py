"""`spidergan <command>`: each pipeline stage and tool, calling the same functions as stages/.

Stage commands read `params.yaml` (validated as a whole) from the project root; tool commands
take their inputs as arguments. Add a command by writing a `_cmd_<name>(args)` function and
registering it in `build_parser`.
"""

from __future__ import annotations

import argparse
import sys

from spidergan import env, params


def _load(args) -> params.Params:
    return params.load(args.params)


def _cmd_scrape(args) -> int:
    from spidergan import scrape

    p = _load(args)
    counts = scrape.run(p.scrape, seed=p.seed, out=args.out, metrics_path=args.metrics)
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def _cmd_synthetic_sample(args) -> int:
    import dataclasses

    from PIL import Image

    from spidergan import atomic
    from spidergan.sources import synthetic

    p = _load(args)
    sp = p.scrape.synthetic
    seed = p.seed if args.seed is None else args.seed
    sheet = synthetic.sample_grid(dataclasses.replace(sp, count=args.count), seed, count=args.count,
                                  cols=args.cols, cell=args.cell, boxes=args.boxes)
    im = Image.fromarray(sheet)
    png = str(args.out).lower().endswith(".png")
    if args.palette and png:   # 256-colour PNG: a third of the size, for docs
        im = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    atomic.save_image(args.out, im, **({"optimize": True} if png else {}))
    print(f"wrote {args.out}: {args.count} synthetic images (seed {seed})")
    return 0


def _cmd_params(args) -> int:
    import json

    print(json.dumps(params.to_dict(_load(args)), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spidergan", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("scrape", help="bring images from the configured source into data/raw")
    s.add_argument("--out", default="data/raw")
    s.add_argument("--metrics", default="metrics/scrape.json")
    s.set_defaults(func=_cmd_scrape)

    s = sub.add_parser("synthetic-sample",
                       help="write a contact sheet of synthetic spider photos (params.yaml's settings)")
    s.add_argument("--count", type=int, default=24)
    s.add_argument("--cols", type=int, default=6)
    s.add_argument("--cell", type=int, default=256, help="cell size in pixels")
    s.add_argument("--seed", type=int, default=None, help="default: params.yaml's seed")
    s.add_argument("--boxes", action="store_true", help="draw the ground-truth boxes")
    s.add_argument("--palette", action="store_true", help="256-colour PNG (smaller file)")
    s.add_argument("--out", default="synthetic_sample.png")
    s.set_defaults(func=_cmd_synthetic_sample)

    s = sub.add_parser("params", help="validate params.yaml and print it with all defaults")
    s.set_defaults(func=_cmd_params)
    return ap


def main(argv: list[str] | None = None) -> int:
    env.setup()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except params.ParamsError as e:
        print(f"spidergan: invalid parameters: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
