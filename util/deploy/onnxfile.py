"""ONNX files of the student: written atomically and never over a user's file unless asked, and
their metadata (metadata_props: network, n_class, depth, height, width, precision, dataset ...)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Optional

from .. import files


def check_new_file(path: Path, overwrite: bool, option: str) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{option} {path} exists; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_path(path: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary path beside `path`, renamed over it when the block succeeds (removed otherwise)."""
    # check again before the rename: the file may have appeared meanwhile
    with files.atomic_path(path, lambda: check_new_file(path, overwrite, "output")) as tmp:
        yield tmp


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the model's metadata_props with `metadata` and check the file."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def declared_size(meta: dict[str, str], key: str, dim: object, path: Path, what: str) -> int:
    """A size an exported file states twice, in its metadata (``meta[key]``) and in its graph (`dim`, `what`
    it is there; a name or None when the graph leaves it open): the one metadata check at load. ValueError
    naming the file when the two disagree or neither is a whole number, before anything is written."""
    stated: Optional[str] = meta.get(key)
    fixed = dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None
    if stated is None:
        if fixed is None:
            raise ValueError(f"{path}: the {what} is neither in the metadata nor a fixed dimension ({dim!r})")
        return fixed
    try:
        value = int(stated)
    except ValueError:
        raise ValueError(f"{path}: its metadata says {key} {stated!r}, not a whole number") from None
    if value <= 0 or (fixed is not None and value != fixed):
        raise ValueError(f"{path}: its metadata says {key} {stated} but its graph's {what} is {dim}; the metadata "
                         f"does not describe this model (not as python -m util.export wrote it): export it again")
    return value
