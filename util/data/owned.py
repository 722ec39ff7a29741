"""Output folders a tool owns: written whole beside the output, listed in a manifest, swapped in at the end.

Every writer of a data folder (util.data.convert, util.data.bag_convert, util.data.synthetic) goes through
:func:`write_owned`, so the rules are the same everywhere:

- The folder is filled in a hidden sibling ``.<name>.partial-<host>-<pid>`` and renamed to the output only
  when complete, so an interrupted run never leaves a half-written output. A process killed outright leaves
  its work folder behind; the next writer of the same output on the same host removes those whose process
  is gone (:func:`remove_stale_work_dirs`).
- The folder holds a manifest (the tool's file name, e.g. ``convert.json``): ``{"tool": ..., <the writer's
  own record>, "files": {relative path: sha256}}``.
- An output is replaced only when it is empty, or (with ``overwrite``) holds nothing but what its manifest
  lists, unchanged (:func:`foreign_entries`): nothing a user put or edited there is deleted or overwritten.
  Manifests of earlier versions (a ``files`` list without checksums, or ``"generator"`` instead of
  ``"tool"``) are still read, so their folders stay replaceable.
- The old output is renamed aside, the new one renamed in, then the old one removed (:func:`swap_in`).
- A tool that adds files to such a folder later (util.edges: ``edge_4x/``) lists them in the folder's manifest
  (:func:`record_files`), so the folder stays its tool's output and replaceable with ``overwrite``.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from util.files import atomic_write, sha256_file, write_if_changed

PARTIAL, OLD = "partial", "old"
_LEGACY_KINDS = ("converting",)  # util.data.convert's work folders before this module


class DestinationError(FileExistsError):
    """The output folder may not be written: it is not a folder, or holds something its tool did not write."""


@dataclass(frozen=True)
class Owner:
    """A tool that writes whole output folders: its name (``tool`` in the manifest) and its manifest's file name."""

    tool: str
    manifest: str


CONVERTER = Owner("util.data.convert", "convert.json")  # util.data.convert's and util.data.bag_convert's sets
SYNTHETIC = Owner("util.data.synthetic", "synthetic.json")  # util.data.synthetic's sets and unlabeled pools
OWNERS = (CONVERTER, SYNTHETIC)  # every writer of whole data folders, whose manifests record_files updates
OVERWRITE_HINT = "add --overwrite to replace it"  # what a refusal of an earlier output tells the user by default


# ----------------------------------------------------------------------------- work folders

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


def remove_stale_work_dirs(out: Path) -> None:
    """Remove work folders of ``out`` left on this host by processes that no longer run (or by this one)."""
    for kind in (PARTIAL, OLD, *_LEGACY_KINDS):
        head = work_dir(out, kind, 0).name[:-1]
        for path in out.parent.glob(head + "*"):
            pid = path.name[len(head):]
            if pid.isdigit() and (int(pid) == os.getpid() or not alive(int(pid))):
                shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(out: Path) -> Iterator[Path]:
    """This process's hidden work folder beside ``out`` (same file system: its files can be renamed to
    ``out``), for a writer of one file too (util.deploy.quantize); removed on exit, and by the next writer
    of ``out`` on this host when a kill left it behind."""
    remove_stale_work_dirs(out)
    work = work_dir(out, PARTIAL)
    work.mkdir(parents=True)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- the manifest

def listed_files(folder: Path, owner: Owner) -> Optional[dict[str, Optional[str]]]:
    """{relative path: sha256, or None when the manifest is of the older kind without checksums} of the files
    ``folder``'s manifest says ``owner`` wrote; None when there is no readable manifest of ``owner``."""
    try:
        doc = json.loads((folder / owner.manifest).read_text(encoding="utf-8"))
        tool, files = doc.get("tool", doc.get("generator")), doc["files"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if tool != owner.tool:
        return None
    if isinstance(files, list) and all(isinstance(f, str) for f in files):
        return dict.fromkeys(files)
    if isinstance(files, dict) and all(isinstance(f, str) and isinstance(h, str) for f, h in files.items()):
        return dict(files)
    return None


def foreign_entries(folder: Path, owner: Owner) -> Optional[list[tuple[Path, str]]]:
    """(entry, why) for each entry of ``folder`` that ``owner`` did not write: files and links its manifest does
    not list, folders that hold none of its files, and listed files whose content changed since. None when
    ``folder`` holds no readable manifest of ``owner`` (then nothing in it is known to be ``owner``'s)."""
    files = listed_files(folder, owner)
    if files is None:
        return None
    folders = {p for rel in files for p in Path(rel).parents if p != Path(".")}
    foreign = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_symlink() or (path.is_dir() and rel not in folders):
            foreign.append((path, f"not written by {owner.tool}"))
        elif path.is_file() and rel.as_posix() != owner.manifest:
            if rel.as_posix() not in files:
                foreign.append((path, f"not written by {owner.tool}"))
            elif files[rel.as_posix()] is not None and sha256_file(path) != files[rel.as_posix()]:
                foreign.append((path, f"changed since {owner.tool} wrote it"))
    return foreign


def check_destination(out: Path, owner: Owner, overwrite: bool, hint: Optional[str] = OVERWRITE_HINT,
                      source: Optional[Path] = None) -> None:
    """Raise :class:`DestinationError` (one line naming the entry) unless ``out`` is absent, an empty folder,
    or, with ``overwrite``, holds nothing but an earlier output of ``owner``; and, given the ``source`` the
    output is made from, unless ``out`` lies apart from it (neither inside nor around it). ``hint``: what the
    refusal of an earlier output (without ``overwrite``) tells the user to do, for a caller that offers no
    overwrite another (or None). The one destination check of every writer of data folders."""
    if source is not None:
        s, d = source.resolve(), out.resolve()
        if d == s or s in d.parents:
            raise DestinationError(f"{out}: destination lies inside the source {source}; the converter never "
                                   f"writes into SRC")
        if d in s.parents:
            raise DestinationError(f"{out}: destination contains the source {source}; choose a DST outside it")
    if out.exists() and not out.is_dir():
        raise DestinationError(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    foreign = foreign_entries(out, owner)
    if foreign is None:
        raise DestinationError(f"{out}: not empty and not written by {owner.tool} (no valid {owner.manifest}); "
                               f"choose another output folder")
    if foreign:
        path, why = foreign[0]
        such = "1 such entry" if len(foreign) == 1 else f"{len(foreign)} such entries"
        raise DestinationError(f"{path}: {why} ({such} in {out}); refusing to replace {out}")
    if not overwrite:
        raise DestinationError(f"{out}: holds an earlier output of {owner.tool}" + (f"; {hint}" if hint else ""))


def write_manifest(folder: Path, owner: Owner, record: dict) -> dict:
    """Write ``folder``'s manifest: ``owner``'s name, ``record`` and the sha256 of every file now in ``folder``
    but the manifest itself (a file of that name in a sub-folder is listed like any other), written atomically,
    as every small file of a data folder. Returns its content."""
    files = {rel: sha256_file(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and (rel := p.relative_to(folder).as_posix()) != owner.manifest}
    doc = {"tool": owner.tool, **record, "files": files}
    atomic_write(folder / owner.manifest, lambda f: f.write(json.dumps(doc, indent=1) + "\n"))
    return doc


def record_files(folder: Path, relpaths: Iterable[str], owners: Sequence[Owner] = OWNERS) -> Optional[Owner]:
    """List the files ``relpaths`` (relative to ``folder``), written there after its tool, with their sha256 in
    ``folder``'s manifest: the first valid one of ``owners`` (rewritten atomically, everything else in it kept;
    an earlier version's list without checksums gets the names). A folder without one is not a tool's output
    and is left alone. Returns the owner whose manifest was updated, or None."""
    folder = Path(folder)
    for owner in owners:
        if listed_files(folder, owner) is None:
            continue
        rels = [Path(rel).as_posix() for rel in relpaths]
        bad = [rel for rel in rels if rel == owner.manifest or Path(rel).is_absolute() or ".." in Path(rel).parts]
        if bad:
            raise ValueError(f"record_files: {bad[0]!r} is not a file of {folder} other than its manifest")
        path = folder / owner.manifest
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc["files"], list):
            doc["files"] = doc["files"] + [rel for rel in rels if rel not in doc["files"]]
        else:
            doc["files"] = {**doc["files"], **{rel: sha256_file(folder / rel) for rel in rels}}
        write_if_changed(path, json.dumps(doc, indent=1) + "\n")  # nothing new listed: left as it is
        return owner
    return None


# ----------------------------------------------------------------------------- writing

def swap_in(work: Path, out: Path) -> None:
    """Rename the finished ``work`` folder to ``out``; a non-empty ``out`` (already checked) is renamed aside
    first and removed once the new one is in place."""
    if out.is_dir() and any(out.iterdir()):
        old = work_dir(out, OLD)
        os.rename(out, old)
        os.rename(work, out)
        shutil.rmtree(old)
        return
    try:
        os.rename(work, out)  # also replaces an empty folder
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        raise DestinationError(f"{out}: filled by another process meanwhile; kept it and discarded this "
                               f"copy") from None


def write_owned(out: Path, owner: Owner, overwrite: bool, fill: Callable[[Path], dict],
                hint: Optional[str] = OVERWRITE_HINT) -> dict:
    """Write the output folder ``out`` of ``owner``: ``fill(work)`` writes every file into a new work folder
    and returns the writer's record; the manifest is added and the folder swapped in. ``out`` is checked
    (:func:`check_destination`) before and again just before the swap (it may have changed meanwhile).
    Whatever goes wrong, the work folder is removed and ``out`` left as it was. ``hint``: as in
    :func:`check_destination`. Returns the manifest."""
    out = Path(os.path.abspath(out))  # its parent and name also for "." or ".."
    check_destination(out, owner, overwrite, hint)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work_dirs(out)
    work = work_dir(out, PARTIAL)
    try:
        work.mkdir()
        doc = write_manifest(work, owner, fill(work))
        check_destination(out, owner, overwrite, hint)
        swap_in(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return doc


# ----------------------------------------------------------------------------- conversions

class ConvertError(ValueError):
    """A conversion (util.data.convert, util.data.bag_convert) was refused; ``problems`` lists every reason,
    each naming a file or argument."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message if not problems else message + "\n" + "\n".join(problems))
        self.problems = list(problems) or [message]


def check_conversion(src: Path, dst: Path, overwrite: bool) -> None:
    """:func:`check_destination` for a conversion of ``src`` into ``dst``: ConvertError (one line) when refused."""
    try:
        check_destination(dst, CONVERTER, overwrite, source=src)
    except DestinationError as exc:
        raise ConvertError(str(exc)) from None


def write_converted(dst: Path, overwrite: bool, fill: Callable[[Path], dict]) -> dict:
    """:func:`write_owned` for a conversion: ``fill(work)`` writes the set and returns the record; refusals
    (also when DST changed during the run) raise ConvertError. Returns the manifest. Callers check the
    destination first (:func:`check_conversion`), before reading any source."""
    try:
        return write_owned(dst, CONVERTER, overwrite, fill)
    except DestinationError as exc:
        raise ConvertError(str(exc)) from None


def os_error_line(exc: OSError, dst: str | os.PathLike) -> str:
    """One line for a system error while converting into `dst` (nothing of the conversion is left)."""
    why = ("the disk is full (no space left on device)" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
           else exc.strerror or str(exc))
    return f"{exc.filename or dst}: {why}; nothing was written to {dst}"
