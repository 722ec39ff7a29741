"""`python -m util.card PATH`: print a model card and check the sha256 of every file it lists.

PATH: a card.json (or NAME.card.json), a MODEL_CARD.md, a folder holding a card, or a weights file with a
card beside it. Exit 0: every listed file matches; 1: a file differs from its card or is missing;
2: no card found, or one that cannot be read.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from util.engine.card import (
    CARD_JSON,
    CARD_MD,
    CardError,
    card_paths,
    find_card,
    load_card,
    render_markdown,
    verify_card,
)
from util.options import ArgumentParser


def locate(path: Path) -> Path:
    """The card PATH names; CardError (one line) when there is none."""
    if path.is_dir():
        cards = card_paths(path)
        if not cards:
            raise CardError(f"{path}: no {CARD_JSON} in this folder")
        return cards[0]
    if not path.exists():
        raise CardError(f"{path}: no such file or folder")
    if path.name.endswith(CARD_JSON):
        return path
    if path.name.endswith(CARD_MD):
        card = path.with_name(path.name[: -len(CARD_MD)] + CARD_JSON)
        if not card.is_file():
            raise CardError(f"{path}: no {card.name} beside it (the checksums live there)")
        return card
    card = find_card(path)
    if card is None:
        raise CardError(f"{path}: no card beside it lists this file")
    return card


def main(argv: Optional[list[str]] = None) -> int:
    p = ArgumentParser(prog="python -m util.card", description="Print a model card and verify the checksums of its files.")
    p.add_argument("path", help="card.json, MODEL_CARD.md, a run folder or a weights file")
    args = p.parse_args(argv)
    try:
        card_path = locate(Path(args.path))
        text = render_markdown(load_card(card_path))
        status = verify_card(card_path)
    except CardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    print(f"Checksums of {card_path}:")
    for name, state in status.items():
        print(f"  {state.upper() if state != 'ok' else 'ok':8s} {name}")
    bad = [n for n, s in status.items() if s != "ok"]
    if bad:
        print(f"error: {', '.join(bad)}: {'does' if len(bad) == 1 else 'do'} not match {card_path} "
              f"(damaged, replaced or missing)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
