"""argparse `type=` functions of the integer options added with unlabeled distillation (issue 18); each
refuses a bad value with argparse's one line, naming the accepted range."""
from __future__ import annotations

import argparse


def _integer(text: str, low: int, accepted: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}")
    return value


def count(text: str) -> int:
    """An integer >= 0."""
    return _integer(text, 0, "an integer >= 0")


def positive(text: str) -> int:
    """An integer >= 1."""
    return _integer(text, 1, "an integer >= 1")
