"""``python -m pyrawan.commands.synthetic``: finetune or distill on a synthetic latent cache.

For tests, benchmarks and trying a launcher setup without data (also under ``torchrun`` and the
``deepspeed`` launcher); errors are printed as the CLI prints them::

    python -m pyrawan.commands.synthetic RECIPE [key=value ...] -o OUT [--resume] [--items 24]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pyrawan.errors import PyrawanError
from pyrawan.recipe import load_recipe
from pyrawan.train.synthetic import for_recipe


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--nan-items", default="", help="Comma-separated items whose latents are NaN.")
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None)
    args = ap.parse_intermixed_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.overrides, kind=("finetune", "distill"))
        if recipe.kind == "distill":
            from pyrawan.commands.distill import run
        else:
            from pyrawan.commands.finetune import run
        nan = tuple(int(i) for i in args.nan_items.split(",") if i)
        run(recipe, args.out, resume=args.resume, overwrite=args.overwrite,
            source=for_recipe(recipe, args.items, nan_items=nan))
    except PyrawanError as err:
        print(f"error: {err}", flush=True)
        raise SystemExit(err.exit_code) from None


if __name__ == "__main__":
    main()
