"""Resuming a run: which run and checkpoint `--resume` names, its saved options, and which may change.

A resumed run takes its configuration from its checkpoint (or, when it stopped before its first
checkpoint, from its run.json); `resumed_config` lets the options in `RUNTIME_OPTIONS` change
(e.g. `--epochs` to extend a run) and refuses the rest.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from ..files import is_partial_write
from .checkpoint import NETWORK_ROLE, TRAINER, read_training_checkpoint
from .config import ConfigError, TrainConfig, flag
from .folders import BEST, CONFIG_FILE, LAST, LOCK_FILE

# Options that may differ when a run is resumed; every other option is the run's own.
RUNTIME_OPTIONS = ("epochs", "device", "workers", "progress", "stop_after_epochs", "max_steps_per_epoch",
                   "image_every", "eval_splits", "runs_dir", "run_name", "resume")
# What a run folder may hold before its first checkpoint: it is then safe to start it again.
_OWN_FILES = {CONFIG_FILE, "tb", BEST, LOCK_FILE}


def resume_target(resume: str | Path) -> tuple[Path, Path]:
    """(run folder, last.pth) for `--resume RUN_DIR_OR_CKPT`."""
    path = Path(resume)
    if path.is_dir():
        return path, path / LAST
    if not path.exists():
        raise FileNotFoundError(f"--resume {resume}: no such run folder or checkpoint")
    return path.parent, path


def restartable(folder: Path) -> bool:
    """A folder made by a trainer that holds no checkpoint to resume from (so it may start again): its
    run.json and what a trainer writes before its first checkpoint, or only :func:`holds_nothing`."""
    if holds_nothing(folder):
        return True
    if not (folder / CONFIG_FILE).is_file() or (folder / LAST).exists():
        return False
    return {p.name for p in folder.iterdir() if not is_partial_write(p.name)} <= _OWN_FILES


def holds_nothing(folder: Path) -> bool:
    """A trainer's folder killed before its run.json was in place: its run.lock and nothing else but
    partial writes (``.run.json.XXXX.tmp``). Nothing in it is worth keeping; nothing else qualifies
    (an empty folder, or one holding any other file, may be a user's)."""
    entries = list(folder.iterdir()) if folder.is_dir() else []
    return (any(p.name == LOCK_FILE and p.is_file() for p in entries)
            and all((p.name == LOCK_FILE or is_partial_write(p.name)) and p.is_file() and not p.is_symlink()
                    for p in entries))


def network_of_run(folder: Path) -> Optional[str]:
    """The network a run folder's run.json names (None when it cannot be read)."""
    try:
        return json.loads((folder / CONFIG_FILE).read_text()).get("network")
    except (OSError, ValueError, AttributeError):
        return None


def saved_config(cls: type[TrainConfig], resume: str | Path) -> Optional[TrainConfig]:
    """The configuration of the run `--resume` points at: from its last.pth, or from the run.json
    of a run that has no checkpoint yet; None for a folder that :func:`holds_nothing` (killed before
    its run.json was written: the command line's options start it)."""
    folder, ckpt_path = resume_target(resume)
    if ckpt_path == folder / LAST and not ckpt_path.exists() and holds_nothing(folder):
        return None
    if ckpt_path.is_file():
        args = read_training_checkpoint(ckpt_path, cls.network, mmap=True)["args"]
    elif (folder / CONFIG_FILE).is_file():
        try:
            saved = json.loads((folder / CONFIG_FILE).read_text())
            network, args = saved["network"], saved["config"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"--resume {resume}: unreadable {folder / CONFIG_FILE} ({exc})") from None
        if network != cls.network:
            raise ValueError(f"--resume {resume}: {folder} is a {network} ({NETWORK_ROLE.get(network, '?')}) run "
                             f"folder, but {TRAINER[cls.network]} resumes {cls.network} "
                             f"({NETWORK_ROLE[cls.network]}) runs")
    else:
        raise FileNotFoundError(f"--resume {resume}: no checkpoint {ckpt_path}, and not a run folder of this trainer")
    return cls.from_dict(args)


def resumed_config(saved: TrainConfig, cli: TrainConfig, given: set[str]) -> TrainConfig:
    """The saved run's config with the runtime options given on the command line.

    Raises ConfigError listing every other option that was given with a value different from
    the run's (model size, data, losses and the optimiser cannot change mid-run).
    """
    fixed = [f"{flag(k)} {getattr(cli, k)!r} (the run has {getattr(saved, k)!r})"
             for k in sorted(given) if k not in RUNTIME_OPTIONS and getattr(cli, k) != getattr(saved, k)]
    if fixed:
        raise ConfigError("--resume: these options cannot change in a run that has started: " + "; ".join(fixed))
    return dataclasses.replace(saved, **{k: getattr(cli, k) for k in given if k in RUNTIME_OPTIONS})
