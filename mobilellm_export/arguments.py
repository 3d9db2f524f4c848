"""The command line's argument layer: every number and text a user types is checked here, once,
as argparse parses it, so no command starts work on a value it cannot use (a zero context, a NaN
temperature, a prompt that is not UTF-8).

A bad argument is one line on stderr (`mobilellm-export: error: argument --x: ...`) and exit 2,
like every other user error, instead of argparse's usage block.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog.split()[0]}: error: {message} (see --help)\n")


def integer(minimum: int, maximum: int | None = None, why: str = "") -> Callable[[str], int]:
    """An int within [minimum, maximum]; `why` says what the bound protects."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise argparse.ArgumentTypeError(f"must be {bound}{why}, got {value}")
        return value
    return parse


def real(minimum: float, maximum: float | None = None, *, zero_or_at_least: float | None = None) -> Callable[[str], float]:
    """A finite float within [minimum, maximum]. `zero_or_at_least`: 0 is allowed (it means
    something else, e.g. greedy decoding) but positive values must reach this bound."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum:g}" if maximum is None else f"between {minimum:g} and {maximum:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value:g}")
        if zero_or_at_least is not None and 0 < value < zero_or_at_least:
            raise argparse.ArgumentTypeError(f"must be 0 or at least {zero_or_at_least:g}, got {value:g}")
        return value
    return parse


def text(value: str) -> str:
    """Text that is valid UTF-8. Arguments reach Python decoded with the locale's codec and
    invalid bytes kept as lone surrogates (PEP 383), which no tokenizer can encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise argparse.ArgumentTypeError(f"is not valid UTF-8: {shown!r}") from None
    return value


def int_list(minimum: int) -> Callable[[str], tuple[int, ...]]:
    """Comma-separated ints, each at least `minimum`, at least one."""
    one = integer(minimum)

    def parse(text_value: str) -> tuple[int, ...]:
        values = tuple(one(part.strip()) for part in text_value.split(",") if part.strip())
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text_value!r}")
        return values
    return parse

