"""Argument types shared by the subcommands' parsers: a bad value is one line naming it and what is valid."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer ≥ 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value
