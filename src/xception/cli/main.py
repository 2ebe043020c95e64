"""The ``xception`` command: one subcommand per module of this package, nothing imports this."""

from __future__ import annotations

import argparse
import gc
import os
import sys

from ..errors import XceptionError
from . import bench, evaluate, experiment, predict, train, weights

SUBCOMMANDS = (train, evaluate, predict, weights, experiment, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xception", description="Train, evaluate and use Xception (Chollet, CVPR 2017).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; user errors print one line and exit 2 (XCEPTION_DEBUG=1 shows tracebacks)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except XceptionError as e:
        if os.environ.get("XCEPTION_DEBUG"):
            raise
        from ..files import printable

        print(printable(f"xception {args.command}: error: {e}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xception {args.command}: interrupted", file=sys.stderr)
        return 130


def console() -> int:
    """The ``xception`` command: ``main``, then ``gc.freeze()`` before the interpreter exits.

    Why: the interpreter's last garbage collections walk every object still alive - a great many
    after torch._dynamo (which the first optimizer imports) and matplotlib - and took a noticeable
    time after the work was done, far less with the objects frozen (as measured:
    benchmarks/RESULTS.md, "Figures moved out of code comments"). Frozen objects are only skipped
    by the collector; everything is already written and closed when ``main`` returns.
    """
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(console())
