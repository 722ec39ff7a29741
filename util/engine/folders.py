"""Output folders and JSON files of trainers, demos and the pipeline: always new, never overwritten."""
from __future__ import annotations

import datetime
import fcntl
import json
import math
import os
import socket
from pathlib import Path
from typing import IO, Any, Optional

import numpy as np

from ..files import atomic_write


def new_run_dir(runs_dir: str | os.PathLike, name: Optional[str], prefix: str, hint: str = "") -> Path:
    """Create `runs_dir/name` (default name: prefix and time); an existing folder is an error, never reused.

    `hint` is appended to that error; `{path}` in it stands for the folder.
    """
    path = Path(runs_dir) / (name or f"{prefix}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if Path(runs_dir).exists() and not Path(runs_dir).is_dir():
        raise NotADirectoryError(f"--runs-dir {runs_dir}: is a file, expected a folder")
    if path.exists():
        raise FileExistsError(f"run folder {path} already exists; choose another --run-name{hint.format(path=path)}")
    path.mkdir(parents=True)
    return path


# A training run's folder (util/engine/run.py): its configuration, written when the folder is made; the lock
# of the process that owns it; the resumable checkpoint, the best epoch's weights, those weights with the
# release's key names, and the final test's results.
CONFIG_FILE, LOCK_FILE = "run.json", "run.lock"
LAST, BEST, FINAL, RESULTS = "last.pth", "best.pth", "final.pth", "results.json"


def claim_folder(folder: Path, what: str = "run folder") -> IO[str]:
    """Make `folder` this process's: an exclusive lock on folder/run.lock, held while the returned
    file stays open (the system drops it when the process ends, however it ends), and the owner's
    pid and host written in it. FileExistsError naming the owner when another process holds it."""
    f = open(folder / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        owner = f.read().strip() or "another process"
        f.close()
        raise FileExistsError(f"{what} {folder} is in use by {owner}; wait until it ends or choose another "
                              f"--run-name") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


def json_safe(value: Any) -> Any:
    """Arrays to lists and NaN to null, recursively, so that the file is strict JSON."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def write_json(obj: Any, path: Path) -> None:
    """Write `obj` as JSON through a temporary file and a rename (a reader never sees half a file)."""
    text = json.dumps(json_safe(obj), indent=2)
    atomic_write(path, lambda f: f.write(text))
