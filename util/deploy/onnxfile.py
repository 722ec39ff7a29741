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


def check_external_data(path: str | os.PathLike) -> None:
    """Refuse an ONNX file whose tensors keep their data in files outside its own folder (an absolute path,
    ``..``, or a link leading out), or in files that are not there: onnxruntime's rule, checked here in our
    words before a runtime that says less (OpenVINO) is given the file. Nothing outside is opened. A file
that is no ONNX model at all passes, for the runtime's load to name."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    path = Path(path)
    folder = path.parent.resolve()
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not an ONNX file at all: the runtime's load names that
        return
    for tensor in _get_all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise ValueError(f"{path}: tensor {tensor.name} keeps its data in {location!r}, outside the model's "
                             f"folder {folder}; refused (an ONNX file may only use data files in its own folder)")
        if not target.is_file():
            raise ValueError(f"{path}: tensor {tensor.name} keeps its data in {location!r}, which is not in "
                             f"{folder}; copy it beside the model")


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
