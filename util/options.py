"""One mechanism that parses and range-checks every command-line option of every command.

It imports nothing from the project, so every module (util.data, util.engine, util.deploy, the scripts)
can use it. Each factory returns a `Spec`: an argparse ``type=`` callable that parses the text strictly
(ASCII digits only: ``int("٣")`` and ``int("1_000")`` are refused), checks the range and raises
``argparse.ArgumentTypeError`` saying what is accepted, e.g.::

    error: argument --workers: must be an integer at least 0, got '-1' (see trainTeacher.py --help)

The same Spec checks values that do not come from a command line (a config built in code):
``spec.check(value)`` returns the value or raises ValueError with the requirement alone
("must be an integer at least 0"); ``check_option("--workers", -1, spec)`` words it as
"--workers -1: must be an integer at least 0". ``spec.requirement`` is that text, for help strings.

API:
    integer(low=None, high=None)            int in [low, high] (either bound may be None)
    multiple_of(step, low)                  int, a multiple of `step`, at least `low`
    number(low=None, high=None, *, above=None, below=None)
                                            finite float; low/high inclusive, above/below exclusive
    fraction(zero=True, one=False)          finite float in [0, 1) (0 allowed unless zero=False; 1 if one=True)
    one_of(values, cast=str)                one of `values` (after `cast`, e.g. int)
    palette()                               "R,G,B;R,G,B;..." -> list of (r, g, b) tuples, each 0..255
    split_name()                            a split's name (train, test_day, ...): letters, digits, '_', '-', '.'
    folder_name()                           one folder name (--run-name): no '/', '\\', NUL, not '.' or '..'
    id_map(high)                            "SRC=ID" -> (src, id) with SRC 0..high (for --map)
    check_option(name, value, spec)         ValueError "NAME VALUE: requirement" unless `spec` accepts `value`
    LowHigh                                 argparse action: two values LOW HIGH (each checked by type=),
                                            LOW < HIGH, stored as a (low, high) tuple (--raw-range, --thermal-range)
    check_low_high(name, low, high)         the same rule for a range given in code: ValueError
                                            "NAME: must be LOW < HIGH, got L H" unless finite and low < high
    ArgumentParser                          argparse.ArgumentParser whose errors are ONE line on stderr
                                            ("error: argument --x: ..."; exit code 2); sub-parsers inherit it

Use: ``p.add_argument("--workers", type=integer(0), default=2)``; with ``nargs`` each value is checked.
A default is not parsed by argparse unless it is a string: keep defaults in range.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Any, Callable, Iterable, NoReturn, Optional

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


class Spec:
    """An argparse ``type=``: parse(text) then check(value); `requirement` is the accepted range in words."""

    def __init__(self, parse: Callable[[str], Any], check: Callable[[Any], bool], requirement: str, name: str):
        self._parse, self._ok, self.requirement = parse, check, requirement
        self.__name__ = name  # argparse names the type in some messages

    def check(self, value: Any) -> Any:
        """`value` when it is acceptable; ValueError(requirement) otherwise."""
        if not self._ok(value):
            raise ValueError(self.requirement)
        return value

    def __call__(self, text: str) -> Any:
        try:
            return self.check(self._parse(text.strip()))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{self.requirement}, got {text!r}") from None

    def __repr__(self) -> str:
        return f"<option: {self.requirement}>"


def _parse_int(text: str) -> int:
    if not _INT.fullmatch(text):
        raise ValueError(text)
    return int(text)


def _parse_float(text: str) -> float:
    if not _FLOAT.fullmatch(text):
        raise ValueError(text)
    return float(text)


def _bounds(low: Optional[float], high: Optional[float]) -> str:
    if low is not None and high is not None:
        return f"from {low} to {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def integer(low: Optional[int] = None, high: Optional[int] = None) -> Spec:
    """An integer in [low, high]."""
    words = "must be an integer" + ("" if low is None and high is None else f" {_bounds(low, high)}")

    def ok(v: Any) -> bool:
        return (isinstance(v, int) and not isinstance(v, bool) and (low is None or v >= low)
                and (high is None or v <= high))
    return Spec(_parse_int, ok, words, "integer")


def multiple_of(step: int, low: int) -> Spec:
    """An integer that is a multiple of `step` and at least `low`."""
    return Spec(_parse_int, lambda v: isinstance(v, int) and v >= low and v % step == 0,
                f"must be an integer multiple of {step}, at least {low}", "integer")


def number(low: Optional[float] = None, high: Optional[float] = None, *, above: Optional[float] = None,
           below: Optional[float] = None) -> Spec:
    """A finite number; `low`/`high` are inclusive bounds, `above`/`below` exclusive ones."""
    parts = ([f"greater than {above:g}"] if above is not None else []) + \
            ([f"at least {low:g}"] if low is not None else []) + \
            ([f"at most {high:g}"] if high is not None else []) + \
            ([f"less than {below:g}"] if below is not None else [])
    words = "must be a finite number" + (" " + " and ".join(parts) if parts else "")

    def ok(v: Any) -> bool:
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (low is None or v >= low) and (high is None or v <= high)
                and (above is None or v > above) and (below is None or v < below))
    return Spec(_parse_float, ok, words, "number")


def fraction(zero: bool = True, one: bool = False) -> Spec:
    """A finite number in [0, 1): 0 excluded when not `zero`, 1 included when `one`."""
    interval = ("[" if zero else "(") + "0, 1" + ("]" if one else ")")
    inner = number(low=0 if zero else None, above=None if zero else 0, high=1 if one else None,
                   below=None if one else 1)
    return Spec(_parse_float, lambda v: inner._ok(v), f"must be a number in {interval}", "fraction")


def one_of(values: Iterable[Any], cast: Callable[[str], Any] = str) -> Spec:
    """One of `values`; the text is converted by `cast` (e.g. `int`; ASCII digits only) first."""
    values = tuple(values)
    parse = _parse_int if cast is int else cast
    return Spec(parse, lambda v: v in values, f"must be one of {', '.join(map(str, values))}", "choice")


def _parse_palette(text: str) -> list[tuple[int, int, int]]:
    colours = []
    for entry in text.split(";"):
        parts = [p.strip() for p in entry.split(",")]
        if len(parts) != 3 or not all(_INT.fullmatch(p) and not p.startswith(("+", "-")) for p in parts):
            raise ValueError(entry)
        colour = tuple(int(p) for p in parts)
        if max(colour) > 255:
            raise ValueError(entry)
        colours.append(colour)
    return colours


def palette() -> Spec:
    """``"0,0,0; 255,0,0"`` -> [(0, 0, 0), (255, 0, 0)]: colours separated by ';', 3 integers 0..255 each."""
    return Spec(_parse_palette, lambda v: bool(v),
                'must be colours "R,G,B;R,G,B;..." of 3 integers 0..255 each (ASCII digits)', "palette")


def split_name() -> Spec:
    """A split's name, read as DATA_DIR/NAME.txt: ASCII letters, digits, '_', '-' and '.', not starting with '.'."""
    pattern = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
    return Spec(lambda t: t, lambda v: isinstance(v, str) and bool(pattern.fullmatch(v)),
                "must be a split name such as train or test_day (letters, digits, '_', '-', '.'; no folders)",
                "split")


def folder_name() -> Spec:
    """One folder name inside a parent folder (e.g. --run-name under --runs-dir): a name that would
    lead elsewhere (a separator, '.', '..') is refused."""
    return Spec(lambda t: t, lambda v: isinstance(v, str) and v not in ("", ".", "..")
                and not any(c in v for c in "/\\\0"),
                "must be one folder name (no '/', '\\', '.' or '..': the folder stays inside --runs-dir)", "name")


def id_map(high: int) -> Spec:
    """``"255=0"`` -> (255, 0): a source value 0..high and a class id (checked against the classes later)."""
    def parse(text: str) -> tuple[int, int]:
        match = re.fullmatch(r"([0-9]+)\s*=\s*([0-9]+)", text)
        if not match:
            raise ValueError(text)
        return int(match[1]), int(match[2])
    return Spec(parse, lambda v: 0 <= v[0] <= high, f"must be SRC=ID with SRC 0..{high} and a class id ID", "map")


def check_option(name: str, value: Any, spec: Spec) -> None:
    """ValueError "NAME VALUE: requirement" unless `spec` accepts `value` (a config built in code)."""
    try:
        spec.check(value)
    except ValueError:
        raise ValueError(f"{name} {value}: {spec.requirement}") from None


def check_low_high(name: str, low: float, high: float) -> tuple[float, float]:
    """(low, high) unchanged; ValueError in :class:`LowHigh`'s words, "NAME: must be LOW < HIGH, got L H"
    (" (finite numbers)" added for inf or nan), unless both are finite and low < high (a range given in code)."""
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        finite = "" if math.isfinite(low) and math.isfinite(high) else " (finite numbers)"
        raise ValueError(f"{name}: must be LOW < HIGH{finite}, got {low:g} {high:g}")
    return low, high


class LowHigh(argparse.Action):
    """``--x LOW HIGH``: two values, each parsed and checked by the option's ``type=``, with LOW < HIGH;
    stored as a ``(low, high)`` tuple. Use: ``p.add_argument("--raw-range", type=number(), action=LowHigh)``."""

    def __init__(self, option_strings, dest, **kwargs):
        kwargs.setdefault("metavar", ("LOW", "HIGH"))
        super().__init__(option_strings, dest, nargs=2, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        try:
            setattr(namespace, self.dest, check_low_high(f"argument {option_string}", *values))
        except ValueError as exc:
            parser.error(str(exc))


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with one-line errors: ``error: argument --x: ...`` on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)
