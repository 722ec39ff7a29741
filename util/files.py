"""Files written atomically: a reader, or a process killed at any moment, sees the old file or the new one.

Each of the project's atomic writers goes through :func:`atomic_write` (or :func:`atomic_path` when a library
writes by path), so a full disk is worded the same way everywhere (:class:`DiskFullError`). Standard
library only, so that any module may use it; it also names the project's cache folder (:func:`cache_dir`).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Optional, Union

PathLike = Union[str, os.PathLike]
_FULL = (errno.ENOSPC, errno.EDQUOT)
_TMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")  # atomic_path's temporary files: .NAME.XXXX.tmp


class DiskFullError(OSError):
    """A file could not be written because its disk (or quota) is full; nothing of it was kept."""

    def __str__(self) -> str:
        return self.strerror


def is_disk_full(exc: Optional[BaseException]) -> bool:
    """Whether `exc` or an exception it came from is ENOSPC/EDQUOT (torch's zip writer wraps it in a RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full(path: PathLike) -> DiskFullError:
    """The one error of a file not written for lack of space, naming `path`."""
    return DiskFullError(errno.ENOSPC, f"{path}: the disk is full (no space left on device); the file was not "
                                       f"written and no part of it was left")


def cache_dir() -> Path:
    """The project's cache folder: ``$CEKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/cekd-pytorch``, else
    ``~/.cache/cekd-pytorch`` (the small JSON files of the dataset check and of the deployment choice)."""
    return Path(os.environ.get("CEKD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "cekd-pytorch"))


@contextlib.contextmanager
def atomic_path(path: PathLike, before_replace: Optional[Callable[[], None]] = None) -> Iterator[Path]:
    """A temporary file ``.NAME.XXXX.tmp`` beside `path` for the block to write; then fsync and a rename over
    `path` (``before_replace`` runs just before, e.g. to check that `path` may still be replaced).

    The temporary file is removed whatever goes wrong; a full disk raises :func:`disk_full` naming `path`.
    The new file gets the permissions of an ordinary new file (not mkstemp's private ones)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if is_disk_full(exc):
            raise disk_full(path) from None
        raise


def atomic_write(path: PathLike, write_fn: Callable[[IO[Any]], Any], binary: bool = False) -> Path:
    """Call ``write_fn(f)`` on a temporary file beside `path` (opened ``"wb"`` when `binary`, else ``"w"`` as
    UTF-8), fsync it and rename it over `path`; returns `path`. A failure leaves the old file (if any) as it was
    and no temporary file; a full disk raises :class:`DiskFullError` naming `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as f:
            write_fn(f)
    return path


def write_if_changed(path: PathLike, text: str) -> bool:
    """:func:`atomic_write` `text` (UTF-8) to `path` unless the file already holds exactly those bytes; whether
    it wrote. A run that changes nothing then touches nothing (modification times stay, so backups and
    make-style freshness checks see no change)."""
    data = text.encode("utf-8")
    with contextlib.suppress(OSError):
        if Path(path).is_file() and Path(path).stat().st_size == len(data) and Path(path).read_bytes() == data:
            return False
    atomic_write(path, lambda f: f.write(data), binary=True)
    return True


def is_partial_write(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_path`'s temporary files (left by a process killed mid-write)."""
    return bool(_TMP_NAME.match(name))


def remove_partial_writes(folder: PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in `folder`; return them."""
    removed = []
    for p in Path(folder).iterdir() if Path(folder).is_dir() else ():
        if p.is_file() and is_partial_write(p.name):
            p.unlink(missing_ok=True)  # another process may have removed it first
            removed.append(p)
    return removed


def sha256_file(path: Union[str, os.PathLike]) -> str:
    """The hex sha256 of a file's content (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
