"""Model cards: what a weights file is and whether a copy of it is intact, written beside it.

A trainer's run folder holds `card.json` (for programs) and `MODEL_CARD.md` (for people) describing every
weights file in it (best.pth, last.pth, final.pth): the network, its input size and classes, the data
(split lists' sizes and sha256, labelled and unlabeled frames), the teacher of a student (its weights' and
card's sha256), the command and configuration, the best epoch, the metrics per split, torch and the
machine, and the sha256 of each weights file. `python -m util.export` writes `NAME.card.json` and
`NAME.MODEL_CARD.md` beside the ONNX files it makes. Both are rewritten atomically after each weights
write; a process killed between the two writes leaves a card one write behind (its check then names the
file as not matching; training on, or `--resume`, writes it again).

The facts of the run are passed in (this module reads no run, model or data loader): it sits at the
engine floor, under the deployment code, and reads the CPU's model name from /proc/cpuinfo itself.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch

from ..data.layout import split_path
from ..files import atomic_write, sha256_file

PathLike = Union[str, os.PathLike]
CARD_JSON, CARD_MD = "card.json", "MODEL_CARD.md"
CARD_FORMAT, CARD_VERSION = "cekd-pytorch-card", 1
SPLITS = ("train", "val", "test", "test_day", "test_night")


class CardError(ValueError):
    """A card that cannot be read, or a weights file that does not match its card."""


def cpu_model(cpuinfo: PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform module says."""
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(device: Optional[torch.device] = None) -> dict[str, Any]:
    """torch, Python and the machine that wrote the card."""
    gpu = None
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device))
    return {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "gpu": gpu}


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """The command as typed (quoted for a shell)."""
    return shlex.join(["python", *(sys.argv if argv is None else argv)])


def split_lists(data_dir: PathLike, splits: Iterable[str] = SPLITS) -> dict[str, dict[str, Any]]:
    """Each present split list of `data_dir`: its frame count and the sha256 of the list file."""
    out = {}
    for split in splits:
        path = split_path(data_dir, split)
        if path.is_file():
            out[split] = {"frames": len(path.read_text().split()), "sha256": sha256_file(path)}
    return out


def file_entries(folder: PathLike, names: Iterable[str],
                 known: Optional[dict[str, tuple[tuple[int, ...], dict[str, Any]]]] = None) -> dict[str, dict[str, Any]]:
    """sha256 and size of each of `names` present in `folder`. `known` (kept by a caller that writes the
    files, e.g. a run writing its card each epoch) remembers each entry with the file's inode, size and
    modification time, so that a file not written again since is not read again."""
    folder = Path(folder)
    known = {} if known is None else known
    entries = {}
    for n in names:
        try:
            st = (folder / n).stat()
        except FileNotFoundError:
            continue
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if n not in known or known[n][0] != key:
            known[n] = (key, {"sha256": sha256_file(folder / n), "bytes": st.st_size})
        entries[n] = dict(known[n][1])
    return entries


def teacher_facts(path: PathLike) -> dict[str, Any]:
    """A student's teacher: its weights file, that file's sha256 and the sha256 of the card beside it (if any)."""
    path = Path(path)
    card = find_card(path)
    return {"weights": str(path), "sha256": sha256_file(path),
            "card": str(card) if card else None, "card_sha256": sha256_file(card) if card else None}


def write_card(folder: PathLike, card: Mapping[str, Any], stem: str = "") -> tuple[Path, Path]:
    """card.json and MODEL_CARD.md (with `stem`: STEM.card.json and STEM.MODEL_CARD.md) in `folder`, atomically."""
    folder = Path(folder)
    card = {"format": CARD_FORMAT, "version": CARD_VERSION, **card}
    text = json.dumps(_json_safe(card), indent=2)
    prefix = f"{stem}." if stem else ""
    json_path = atomic_write(folder / f"{prefix}{CARD_JSON}", lambda f: f.write(text + "\n"))
    md_path = atomic_write(folder / f"{prefix}{CARD_MD}", lambda f: f.write(render_markdown(card)))
    return json_path, md_path


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and v != v) else f"{100 * v:.2f}"


def render_markdown(card: Mapping[str, Any]) -> str:
    """The card for people."""
    net = card.get("network", {})
    lines = [f"# {net.get('name', 'model')} ({card.get('role', '')})", "",
             card.get("summary", ""), "",
             "## Weights files", "", "| file | sha256 | bytes |", "|---|---|---|"]
    lines += [f"| {name} | `{e['sha256']}` | {e['bytes']} |" for name, e in card.get("files", {}).items()]
    lines += ["", "Check a copy: `python -m util.card PATH` (exit 0: every file matches).", "",
              "## Network", ""]
    lines += [f"- {k}: {v}" for k, v in net.items()]
    classes = card.get("classes", [])
    lines += ["", f"## Classes ({len(classes)})", "", ", ".join(f"{i} {c}" for i, c in enumerate(classes))]
    data = card.get("data")
    if data:
        lines += ["", "## Data", "", f"- dataset: {data.get('name')} ({data.get('data_dir')})"]
        lines += [f"- {split}: {s['frames']} frames, list sha256 `{s['sha256']}`"
                  for split, s in data.get("splits", {}).items()]
        if data.get("frames"):
            lines.append(f"- training frames: {data['frames'].get('labelled')} labelled, "
                         f"{data['frames'].get('unlabeled')} unlabeled")
    if card.get("teacher"):
        t = card["teacher"]
        lines += ["", "## Teacher", "", f"- weights: {t['weights']} (sha256 `{t['sha256']}`)",
                  f"- its card: {t['card'] or 'none'}" + (f" (sha256 `{t['card_sha256']}`)" if t["card"] else "")]
    metrics = card.get("metrics", {})
    if metrics:
        lines += ["", "## Metrics", ""]
        if card.get("best_epoch") is not None:
            lines += [f"Best validation epoch: {card['best_epoch']}.", ""]
        lines += ["| split | images | mIoU % | mAcc % |", "|---|---|---|---|"]
        lines += [f"| {s} | {m.get('images', '')} | {_pct(m.get('miou'))} | {_pct(m.get('macc'))} |"
                  for s, m in metrics.items()]
    if card.get("export"):
        lines += ["", "## Export", "", "```json", json.dumps(_json_safe(card["export"]), indent=2), "```"]
    lines += ["", "## How it was made", "", "```", card.get("command", ""), "```"]
    if card.get("config"):
        lines += ["", "```json", json.dumps(_json_safe(card["config"]), indent=2), "```"]
    env = card.get("environment", {})
    lines += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()]
    return "\n".join(lines) + "\n"


def card_paths(folder: PathLike) -> list[Path]:
    """The cards in `folder`: a run's card.json, then export cards (NAME.card.json)."""
    folder = Path(folder)
    found = [folder / CARD_JSON] if (folder / CARD_JSON).is_file() else []
    return found + sorted(p for p in folder.glob(f"*.{CARD_JSON}") if p.is_file())


def load_card(path: PathLike) -> dict[str, Any]:
    """A card.json, checked to be one; CardError (one line naming the file) otherwise."""
    try:
        card = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"{path}: not a readable model card ({type(exc).__name__}); expected the card.json a "
                        f"trainer or util.export wrote") from None
    files = card.get("files") if isinstance(card, dict) else None
    if (not isinstance(card, dict) or card.get("format") != CARD_FORMAT or not isinstance(files, dict)
            or not all(isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in files.values())):
        raise CardError(f"{path}: not a CEKD model card (expected format {CARD_FORMAT!r} and a sha256 per file)")
    return card


def find_card(weights: PathLike) -> Optional[Path]:
    """The card beside `weights` that lists its file name, else None."""
    weights = Path(weights)
    for path in card_paths(weights.parent):
        if weights.name in load_card(path)["files"]:
            return path
    return None


def verify_card(card_path: PathLike) -> dict[str, str]:
    """Each file the card lists: "ok", "mismatch" (another sha256) or "missing"."""
    card_path = Path(card_path)
    out = {}
    for name, entry in load_card(card_path)["files"].items():
        path = card_path.parent / name
        out[name] = "missing" if not path.is_file() else "ok" if sha256_file(path) == entry["sha256"] else "mismatch"
    return out


def check_against_card(weights: PathLike, what: str = "--weights") -> Optional[Path]:
    """When a card beside `weights` lists it, CardError unless the file's sha256 is the card's; returns the card
    (None: no card lists this file name, nothing checked)."""
    weights = Path(weights)
    if not weights.is_file():
        return None  # the loader says it is missing
    card = find_card(weights)
    if card is None:
        return None
    expected = load_card(card)["files"][weights.name]["sha256"]
    actual = sha256_file(weights)
    if actual != expected:
        raise CardError(f"{what} {weights}: sha256 {actual[:16]}... differs from {expected[:16]}... on its card "
                        f"{card}: the copy is damaged or another file than the card describes; copy it again "
                        f"(python -m util.card {card} checks every file)")
    return card
