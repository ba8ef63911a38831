"""``llm4rec plan RECIPE``: print a recipe's memory plan; exit status 1 when it does not fit."""

from __future__ import annotations

import argparse
import re

from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.models.planner.arch import arch_names
from llm4rec.models.planner.plan import plan_recipe

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


@exit_on_user_error
def main(argv: list[str]) -> int:
    """``llm4rec plan RECIPE [--gpu-gb 24] [--arch NAME] [--device cuda|cpu] [section.key=value ...]``.

    Exit status 0 when the plan fits, 1 when it does not, 2 on a recipe error.
    """
    from llm4rec.config import load_recipe

    ap = argparse.ArgumentParser(
        prog="llm4rec plan",
        description="Estimate the peak GPU memory of training RECIPE, offline (no weights needed).",
        epilog=f"packaged architectures: {', '.join(arch_names())}. Exit status 1 when it does not fit.",
    )
    ap.add_argument("recipe", help="recipe YAML")
    ap.add_argument("overrides", nargs="*", help="recipe overrides section.key=value")
    ap.add_argument("--gpu-gb", type=float, default=24.0, help="card memory in GiB (default 24)")
    ap.add_argument("--arch", help="packaged architecture to plan instead of model.path's")
    ap.add_argument(
        "--device", default="cuda", choices=("cuda", "cpu"), help="plan for a GPU (default) or CPU RAM"
    )
    args = ap.parse_intermixed_args(argv)
    bad = [o for o in args.overrides if not _OVERRIDE.match(o)]
    if bad:
        raise UserError(f"override {bad[0]!r}: expected section.key=value")
    recipe = load_recipe(args.recipe, args.overrides)
    plan = plan_recipe(recipe, gpu_gb=args.gpu_gb, device=args.device, arch=args.arch)
    plan.recipe_path = args.recipe
    if plan.auto is not None:
        print(plan.auto.line())
    print(plan.table())
    return 0 if plan.fits else 1
