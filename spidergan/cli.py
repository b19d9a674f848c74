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


def _cmd_mask(args) -> int:
    from spidergan import mask

    p = _load(args)
    try:
        m = mask.run(p.mask, seed=p.seed, manifest_path=args.manifest, images_root=args.images,
                     out=args.out, raw_root=args.raw or None, metrics_path=args.metrics,
                     plots_dir=args.plots)
    except mask.MaskError as e:
        print(f"spidergan mask: {e}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v}" for k, v in m.items() if not isinstance(v, dict)))
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

    s = sub.add_parser("mask", help="cut spiders out of the crops: data/masked (mask.method)")
    s.add_argument("--manifest", default="data/unique/manifest.jsonl",
                   help="input crop manifest (default: %(default)s)")
    s.add_argument("--images", default="data/crops", help="folder the manifest's files are in")
    s.add_argument("--raw", default="data/raw", help="scrape output with ground truth ('' = none)")
    s.add_argument("--out", default="data/masked")
    s.add_argument("--metrics", default="metrics/mask.json")
    s.add_argument("--plots", default="plots/mask")
    s.set_defaults(func=_cmd_mask)

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
