"""A trainer's command line: its checked config, and one line, never a traceback, on a bad input or an early stop."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence, TypeVar

from ..data import DatasetError
from ..data.info import load_dataset_info
from ..files import DiskFullError
from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig, fast_preset, given_options, parse_device, with_data_classes
from .resume import resumed_config, saved_config
from .run import RunStopped

T = TypeVar("T")
# Errors that describe a bad input in their message; anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, CheckpointError, DatasetError, ValueError, FileNotFoundError, FileExistsError,
               NotADirectoryError, IsADirectoryError, PermissionError, DiskFullError)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """`cfg` checked (ConfigError naming the first bad option), --fast's options filled in, with the class
    count of its data folder when --n-class was not given (its dataset.json, else MFNet's 9, which the
    synthetic data have too)."""
    cfg.check()
    cfg = fast_preset(cfg, parse_device(cfg.device))
    return with_data_classes(cfg, load_dataset_info(cfg.data_dir))


def load_config(cls: type[TrainConfig], parser: argparse.ArgumentParser,
                argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """The checked config of a trainer's command line, its class count resolved; with --resume, the
    run's saved config with the runtime options given (see resume.py), or the options given when the
    run folder was killed before its options were saved."""
    cfg = cls(**vars(parser.parse_args(argv)))
    saved = saved_config(cls, cfg.resume) if cfg.resume else None
    if saved is not None:
        cfg = resumed_config(saved, cfg, given_options(parser, argv))
    return resolve(cfg)


TRAINER_INTERRUPTED = "interrupted (Ctrl-C) before training started; nothing was written"


def run_cli(job: Callable[[], T], interrupted: str = TRAINER_INTERRUPTED) -> T:
    """Run `job`; a user error or an early stop prints `error: ...` on stderr and exits (2, or the stop's code).

    `interrupted` is the line for a Ctrl-C outside a training run (a run says where its checkpoint is)."""
    try:
        return job()
    except RunStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except USER_ERRORS as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        raise SystemExit(130) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, DatasetError):
        return text  # lists every problem, one per line, by design
    return text.splitlines()[0] if text else type(exc).__name__
