"""One line, never a traceback: how the command-line scripts end on a bad input or an early stop."""
from __future__ import annotations

import sys
from typing import Callable, TypeVar

from ..data import DatasetError
from ..files import DiskFullError
from .checkpoint import CheckpointError
from .config import ConfigError
from .run import RunStopped

T = TypeVar("T")
# Errors that describe a bad input in their message; anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, CheckpointError, DatasetError, ValueError, FileNotFoundError, FileExistsError,
               NotADirectoryError, IsADirectoryError, PermissionError, DiskFullError)


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
