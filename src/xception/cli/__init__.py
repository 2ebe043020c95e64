"""The ``xception`` command line (``main.py``) and the argument types its subcommands share."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum`` (a count or size), refused at parsing with
    "must be >= N" (exit 2, one error line) instead of failing or doing nothing later."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text[:40]!r}") \
                from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


class _KeepExamples(argparse.HelpFormatter):
    """argparse's formatter, but the example lines are printed as written (whole commands)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n  " in text:  # indented lines: a list or commands, printed as written
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def example(*lines: str, before: str = "") -> dict:
    """``add_parser`` arguments that end the subcommand's help with its example lines (tested to
    parse, so they cannot go stale), after ``before`` (an indented list) if given."""
    return {"epilog": before + "example:\n" + "\n".join(f"  {line}" for line in lines),
            "formatter_class": _KeepExamples}


positive_int = at_least(1)
non_negative_int = at_least(0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a learning rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text[:40]!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text[:40]!r}")
    return value
