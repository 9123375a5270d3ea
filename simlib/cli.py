"""The ``simlib`` command: ``simlib run --profile ci --set n_posts=40``.

Parameters are validated before anything expensive is imported, so a typo fails in well under a
second with the list of valid names.
"""
from __future__ import annotations

import argparse
import json
import sys

from . import config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simlib", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="execute the notebooks with papermill and build the book")
    p_cfg = sub.add_parser("config", help="print the resolved, validated configuration")
    sub.add_parser("params", help="list every parameter with its meaning")
    for p in (p_run, p_cfg):
        p.add_argument("--profile", default="ci", help="params/<profile>.yaml (smoke, ci, paper)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one parameter; repeatable")
    p_run.add_argument("--force", action="store_true", help="re-execute even unchanged notebooks")
    p_run.add_argument("--no-book", action="store_true", help="execute notebooks only")
    p_run.add_argument("--only", action="append", default=None, metavar="NAME",
                       help="run only this notebook (and no book build); repeatable")
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

    from . import runner  # heavy imports only after validation

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


if __name__ == "__main__":
    sys.exit(main())
