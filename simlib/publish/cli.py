"""The ``simlib`` command: ``simlib run --profile ci --set n_posts=40``.

Parameters are validated before anything expensive is imported, so a typo fails in well under a
second with the list of valid names.
"""
from __future__ import annotations

import argparse
import json
import sys

from simlib import config


def plan_env() -> str:
    return "SIMLIB_ACCEPT_COST"  # simlib.publish.plan.CONSENT_ENV, named here without importing the planner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simlib", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="execute the notebooks with papermill and build the book")
    p_cfg = sub.add_parser("config", help="print the resolved, validated configuration")
    sub.add_parser("params", help="list every parameter with its meaning")
    p_plan = sub.add_parser("plan", help="print what a run costs (API requests, tokens, USD, GPU-hours, "
                                         "memory, disk) before any spend")
    p_exp = sub.add_parser("export", help="write a run's real and synthetic replies as a Hugging Face dataset "
                                          "(parquet and a dataset card)")
    for p in (p_run, p_cfg, p_plan, p_exp):
        p.add_argument("--profile", default="ci", help="params/<profile>.yaml (smoke, ci, book, gpu-smoke, paper)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one parameter; repeatable")
    p_plan.add_argument("--posts", type=int, default=None, help="plan for this many posts instead of the estimate")
    p_plan.add_argument("--count", action="store_true",
                        help="count the posts that survive selection and filters (runs the cached data step)")
    p_plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    p_run.add_argument("--yes", action="store_true",
                       help=f"accept the cost of a run that pays for API use (or set {plan_env()}=1)")
    p_run.add_argument("--force", action="store_true", help="re-execute even unchanged notebooks")
    p_run.add_argument("--no-book", action="store_true", help="execute notebooks only")
    p_run.add_argument("--only", action="append", default=None, metavar="NAME",
                       help="run only this notebook (and no book build); repeatable")
    p_exp.add_argument("--out", default=None, help="output folder (default: <work_dir>/export)")
    p_exp.add_argument("--no-quality", action="store_true", help="leave out the gap chapter's quality measures")
    args = parser.parse_args(argv)

    if args.cmd == "params":
        for name, text in config.field_help().items():
            print(f"{name:24s} {text}")
        return 0
    try:
        overrides = config.parse_sets(args.set)
        cfg = config.load(args.profile, overrides)
    except config.ConfigError as exc:
        print(f"simlib: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "config":
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    if args.cmd == "export":
        return export(cfg, args)
    if args.cmd == "plan":
        from simlib.publish import plan

        try:
            the_plan = plan.make(cfg, posts=args.posts, count=args.count)
        except ValueError as exc:
            print(f"simlib: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(the_plan.to_dict(), indent=2) if args.json else the_plan.render())
        return 0
    if cfg.api_base_url:  # only a run that calls an API endpoint can cost money
        from simlib.publish import plan

        try:
            the_plan = plan.make(cfg)
        except ValueError:  # posts unknown offline: the cost cannot be bounded, so it is not free
            the_plan = None
        if the_plan is None or plan.needs_consent(the_plan):
            print(the_plan.render() if the_plan else f"simlib: the cost of profile {cfg.profile!r} is unknown "
                  "(see `simlib plan`)")
            if not plan.consented(args.yes):
                print(f"simlib: this run pays for API use; nothing was started. Re-run with --yes or "
                      f"{plan.CONSENT_ENV}=1 to accept the plan above.", file=sys.stderr)
                return 3

    import os

    from simlib.publish import runner  # heavy imports only after validation

    # the device rule's override reaches the notebooks' kernels, which inherit this environment
    if cfg.device != "auto":
        os.environ["SIMLIB_DEVICE"] = cfg.device

    unknown = [n for n in args.only or [] if n not in runner.manifest()]
    if unknown:
        print(f"simlib: unknown notebook {', '.join(map(repr, unknown))}; the book's notebooks: "
              + ", ".join(runner.manifest()), file=sys.stderr)
        return 2
    try:
        runner.run(cfg, overrides, force=args.force, book=not (args.no_book or args.only), names=args.only)
    except runner.NotebookFailed as exc:
        print(f"simlib: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"simlib: {exc}", file=sys.stderr)
        return 1
    return 0


def export(cfg: config.Config, args) -> int:
    from pathlib import Path

    from simlib.publish import export as exp

    out = Path(args.out) if args.out else cfg.path("export", "x").parent
    try:
        counts = exp.export(cfg, out, quality=not args.no_quality)
    except exp.ExportError as exc:
        print(f"simlib: {exc}", file=sys.stderr)
        return 2
    print(f"simlib: wrote {counts['replies']} replies ({counts['real']} real, {counts['synthetic']} synthetic) "
          f"to {counts['posts']} posts in {out} (replies.parquet, posts.parquet, README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
