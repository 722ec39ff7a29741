"""ONNX files of the student: written atomically and never over a user's file unless asked, and
their metadata (metadata_props: network, n_class, depth, height, width, precision, dataset ...)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

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
