"""What a data folder holds: class names, palette, ignored class and thermal scaling (``dataset.json``).

A data folder in our layout (see util/data/layout.py) may hold a ``dataset.json``::

    {
      "name": "PST900",
      "class_names": ["background", "fire_extinguisher", "backpack", "hand_drill", "survivor"],
      "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]],
      "ignore_index": null,
      "thermal_range": null
    }

``name``, ``class_names`` and ``palette`` are required; ``ignore_index`` and ``thermal_range``
may be left out (null). A folder without the file is MFNet (:data:`MFNET`).

An *unlabeled set* (RGB-thermal frames without labels, for ``trainStudent.py --unlabeled``) holds
``images/``, ``train.txt`` and a ``dataset.json`` of ``{"name": ..., "unlabeled": true}`` (and
optionally ``thermal_range``), without classes: they are the teacher's.

Conventions:

- Label files hold class ids ``0..n_class-1`` and nothing else, so every label map passes
  ``check_dataset(..., n_class)`` and a confusion matrix of ``n_class`` rows holds every pixel.
- ``ignore_index``, when set, MUST be one of those class ids (inside ``[0, n_class)``): it
  names a class such as FMB's "unlabeled" (id 0) that keeps its name and palette colour for
  pictures but is left out of the loss (``CrossEntropyLoss(ignore_index=k)``) and of mIoU.
  A source's void id outside the class list (e.g. 255) is mapped onto that class when the
  folder is converted (``python -m util.convert ... --map 255=0``). MFNet and PST900 ignore nothing
  (their class 0, "unlabeled"/"background", is trained and scored as in their papers).
- ``thermal_range`` ``[LOW, HIGH]``: the thermal channel was converted from 16-bit raw values
  as ``clip(floor((raw - LOW) * 255 / (HIGH - LOW) + 0.5), 0, 255)``; null when the source
  thermal was already 8-bit. Apply the same range to raw frames at inference.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from util.data.layout import DatasetError
from util.data.mfnet import CLASS_NAMES as MFNET_CLASS_NAMES, PALETTE as MFNET_PALETTE
from util.files import atomic_write

PathLike = Union[str, os.PathLike]
Colour = tuple[int, int, int]

INFO_FILE = "dataset.json"
MAX_CLASSES = 256  # label maps are uint8
_REQUIRED = ("name", "class_names", "palette")
_OPTIONAL = ("ignore_index", "thermal_range")
UNLABELED = "unlabeled"  # dataset.json key of an unlabeled set (see write_unlabeled_info)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_names(names: Any) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"class_names: expected a list of names, got {names!r}")
    if not 2 <= len(names) <= MAX_CLASSES:
        raise ValueError(f"class_names: expected 2..{MAX_CLASSES} names, got {len(names)}")
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"class_names[{i}]: expected a non-empty name, got {name!r}")
        if name in seen:
            raise ValueError(f"class_names[{i}]: name {name!r} appears more than once")
        seen.add(name)
    return tuple(names)


def _check_palette(palette: Any, n_class: int) -> tuple[Colour, ...]:
    if isinstance(palette, str) or not isinstance(palette, Sequence):
        raise ValueError(f"palette: expected a list of [R, G, B] colours, got {palette!r}")
    if len(palette) != n_class:
        raise ValueError(f"palette: expected {n_class} colours (one per class), got {len(palette)}")
    colours = []
    for i, colour in enumerate(palette):
        if (isinstance(colour, str) or not isinstance(colour, Sequence) or len(colour) != 3
                or not all(_is_int(c) and 0 <= c <= 255 for c in colour)):
            raise ValueError(f"palette[{i}]: expected 3 integers 0..255, got {colour!r}")
        colours.append(tuple(colour))
    return tuple(colours)


def _check_ignore(ignore_index: Any, n_class: int) -> Optional[int]:
    if ignore_index is None:
        return None
    if not _is_int(ignore_index) or not 0 <= ignore_index < n_class:
        raise ValueError(f"ignore_index: expected null or a class id 0..{n_class - 1} (the ignored class keeps "
                         f"its name and colour; map a void id such as 255 onto it), got {ignore_index!r}")
    return ignore_index


def _check_range(thermal_range: Any) -> Optional[tuple[float, float]]:
    if thermal_range is None:
        return None
    if (isinstance(thermal_range, str) or not isinstance(thermal_range, Sequence) or len(thermal_range) != 2
            or not all(_is_number(v) for v in thermal_range)
            or not 0 <= thermal_range[0] < thermal_range[1] <= 65535):
        raise ValueError(f"thermal_range: expected null or [LOW, HIGH] with 0 <= LOW < HIGH <= 65535, "
                         f"got {thermal_range!r}")
    return (thermal_range[0], thermal_range[1])


@dataclass(frozen=True)
class DatasetInfo:
    """Name, class names, palette (RGB per class id), ignored class id and thermal scaling of a data folder.

    Lists are accepted and stored as tuples; invalid values raise ValueError naming the field.
    """

    name: str
    class_names: tuple[str, ...]
    palette: tuple[Colour, ...]
    ignore_index: Optional[int] = None
    thermal_range: Optional[tuple[float, float]] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name: expected a non-empty string, got {self.name!r}")
        names = _check_names(self.class_names)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "palette", _check_palette(self.palette, len(names)))
        object.__setattr__(self, "ignore_index", _check_ignore(self.ignore_index, len(names)))
        object.__setattr__(self, "thermal_range", _check_range(self.thermal_range))

    @property
    def n_class(self) -> int:
        """Number of classes (label ids 0..n_class-1)."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists instead of tuples)."""
        return {"name": self.name, "class_names": list(self.class_names),
                "palette": [list(c) for c in self.palette], "ignore_index": self.ignore_index,
                "thermal_range": None if self.thermal_range is None else list(self.thermal_range)}

    @classmethod
    def from_dict(cls, data: Any) -> "DatasetInfo":
        """Build from a dict as written by :meth:`to_dict`; ValueError names the missing, unknown or bad field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object with fields {', '.join(_REQUIRED)}, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown field (known: {', '.join(_REQUIRED + _OPTIONAL)})")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ValueError(f"{missing[0]}: required field missing")
        return cls(**{k: data[k] for k in _REQUIRED + _OPTIONAL if k in data})

    def to_json(self) -> str:
        """JSON text, one field per line (palette rows kept on one line)."""
        fields = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in self.to_dict().items()]
        return "{\n" + ",\n".join(fields) + "\n}\n"

    @classmethod
    def from_json(cls, text: str) -> "DatasetInfo":
        """Parse :meth:`to_json` text; ValueError names the field (or the JSON syntax error)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
        return cls.from_dict(data)


def default_palette(n_class: int) -> tuple[Colour, ...]:
    """The PASCAL VOC colour map for ids 0..n_class-1: deterministic, id 0 black, distinct colours up to 256."""
    colours = []
    for cid in range(n_class):
        r = g = b = 0
        c = cid
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


def _read_info_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None


def is_unlabeled_set(data_dir: PathLike) -> bool:
    """Whether ``data_dir/dataset.json`` says ``"unlabeled": true`` (RGB-thermal frames without labels)."""
    path = Path(data_dir) / INFO_FILE
    if not path.is_file():
        return False
    try:
        data = json.loads(_read_info_file(path))
    except ValueError:
        return False
    return isinstance(data, dict) and data.get(UNLABELED) is True


def unlabeled_thermal_range(data_dir: PathLike) -> Optional[tuple[float, float]]:
    """The ``thermal_range`` an unlabeled set's dataset.json records (None when absent or unreadable)."""
    try:
        data = json.loads(_read_info_file(Path(data_dir) / INFO_FILE))
        return _check_range(data.get("thermal_range")) if isinstance(data, dict) else None
    except (DatasetError, ValueError):
        return None


def load_dataset_info(data_dir: PathLike) -> DatasetInfo:
    """The DatasetInfo of ``data_dir/dataset.json``, or :data:`MFNET` when there is no such file.

    A bad file, or an unlabeled set (which has no classes), raises DatasetError with one line
    naming the file.
    """
    path = Path(data_dir) / INFO_FILE
    if not path.exists():
        return MFNET
    if is_unlabeled_set(data_dir):
        raise DatasetError(f"{path}: {data_dir} is an unlabeled set (no labels to train, validate or test on); "
                           f"give it to trainStudent.py --unlabeled {data_dir}, with a labelled --data-dir")
    text = _read_info_file(path)
    try:
        return DatasetInfo.from_json(text)
    except ValueError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def write_unlabeled_info(data_dir: PathLike, name: str,
                         thermal_range: Optional[Sequence[float]] = None) -> Path:
    """Write the ``dataset.json`` of an unlabeled set: ``{"name": ..., "unlabeled": true}`` and, for
    thermal converted from 16 bits, ``"thermal_range": [LOW, HIGH]``. No class list: the classes are
    the teacher's. Written atomically (temporary file, then rename); returns its path."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    doc: dict[str, Any] = {"name": name, UNLABELED: True}
    checked = _check_range(None if thermal_range is None else list(thermal_range))
    if checked is not None:
        doc["thermal_range"] = list(checked)
    return atomic_write(Path(data_dir) / INFO_FILE, lambda f: f.write(json.dumps(doc) + "\n"))


def write_dataset_info(info: DatasetInfo, data_dir: PathLike) -> Path:
    """Write ``data_dir/dataset.json`` atomically (temporary file, then rename); returns its path."""
    return atomic_write(Path(data_dir) / INFO_FILE, lambda f: f.write(info.to_json()))


MFNET = DatasetInfo("MFNet", MFNET_CLASS_NAMES, MFNET_PALETTE)

# PST900 (Shivakumar et al., ICRA 2020): ids and class order as printed by
# ShreyasSkandanS/pst900_thermal_rgb pstnet/code/pst_inference.py ("Rescue randy" = the survivor
# mannequin); colours of toolkit/utilities.py init_colormap, which lists them in OpenCV's BGR order
# for cv2.imshow, written here as RGB.
PST900 = DatasetInfo(
    "PST900", ("background", "fire_extinguisher", "backpack", "hand_drill", "survivor"),
    ((0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)))

# FMB (Liu et al., ICCV 2023; github JinyuanLiu-CV/SegMiF, whose code holds no FMB class list):
# Label/ ids 0 = unlabeled, 1..14 in this order as read by CSIPlab/MMSFormer
# semseg/datasets/fmb.py (which maps 255 to 0 and ignores 0); colours of FMB's color/ folder as
# decoded by LiJiahang617/Road-Former mmseg_custom/datasets/transforms/loading.py
# (LoadFMBAnnotations, BGR there, RGB here; black = unlabeled).
FMB = DatasetInfo(
    "FMB",
    ("unlabeled", "road", "sidewalk", "building", "traffic_light", "traffic_sign", "vegetation", "sky",
     "person", "car", "truck", "bus", "motorcycle", "bicycle", "pole"),
    ((0, 0, 0), (228, 228, 179), (133, 57, 181), (177, 162, 67), (50, 178, 200), (199, 45, 132),
     (84, 172, 66), (79, 73, 179), (166, 99, 76), (253, 121, 66), (91, 165, 137), (152, 97, 155),
     (140, 153, 105), (158, 215, 222), (90, 113, 135)),
    ignore_index=0)


def info_for_classes(n_class: int, stored: Optional[Mapping[str, Any]] = None) -> DatasetInfo:
    """What a network's classes are: the description stored with its weights when there is one,
    else MFNet's for 9 classes, else generic names (class_0, ...) with the default palette."""
    if stored:
        info = DatasetInfo.from_dict(stored)
        if info.n_class == n_class:
            return info
    if n_class == MFNET.n_class:
        return MFNET
    return DatasetInfo(f"{n_class} classes", tuple(f"class_{i}" for i in range(n_class)), default_palette(n_class))
