"""Hidden sibling folders that writers fill before renaming them into place, and their cleanup.

``.<name>.<kind>-<host>-<pid>`` beside the output ``<name>``: "partial"/"converting" while an output is
written, "old" while a previous output is being replaced. A process killed outright leaves its folder
behind; the next writer of the same output on the same host removes those whose process is gone.
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Iterable, Optional


def work_dir(out: Path, kind: str, pid: Optional[int] = None) -> Path:
    """The sibling folder ``.<name>.<kind>-<host>-<pid>`` of ``out`` (this process's by default)."""
    return out.parent / f".{out.name}.{kind}-{socket.gethostname()}-{os.getpid() if pid is None else pid}"


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists but belongs to someone else
        return True
    return True


def remove_stale_work_dirs(out: Path, kinds: Iterable[str]) -> None:
    """Remove work folders of ``out`` left on this host by processes that no longer run (or by this one)."""
    for kind in kinds:
        head = work_dir(out, kind, 0).name[:-1]
        for path in out.parent.glob(head + "*"):
            pid = path.name[len(head):]
            if pid.isdigit() and (int(pid) == os.getpid() or not alive(int(pid))):
                shutil.rmtree(path, ignore_errors=True)
