"""MFNet-format RGB-thermal data loading, with the edge_4x semantic-edge labels of CEKD.

Each item is a dict: ``image`` float32 (4, H, W) in [0, 1] (R, G, B, thermal = PNG / 255),
``label`` int64 (H, W), ``edge`` float32 (1, ceil(H/4), ceil(W/4)) of 0/1 (only when the
dataset uses edges) and ``name``. Frames are resized to (height, width): bilinear for the
image, nearest for labels and edges.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from util.data.augment import JointAugment
from util.data.check import verify_dataset
from util.data.edges import disc_kernel, downsample_edges
from util.data.layout import (
    EDGE_DIR,
    IMAGE_DIR,
    LABEL_DIR,
    DatasetError,
    edge_size,
    load_edge_file,
    load_image_file,
    load_label_file,
    read_edge_radius,
    read_split,
)
from util.data.mfnet import EDGE_STRIDE

__all__ = ["MFDataset", "read_frame"]


def read_frame(data_dir: Union[str, os.PathLike], name: str, edges: bool = False
               ) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Native-size (H, W, 4) uint8 image, (H, W) uint8 label and, when ``edges``, the
    (ceil(H/4), ceil(W/4)) uint8 0/1 edge map of frame ``name``.

    Edge maps stored at the label size are max-pooled to 1/4 (thin edges survive; the released
    loader's nearest resize would drop most of them).
    """
    data_dir = Path(data_dir)
    image = load_image_file(data_dir / IMAGE_DIR / f"{name}.png")
    label_path = data_dir / LABEL_DIR / f"{name}.png"
    label = load_label_file(label_path)
    if label.shape != image.shape[:2]:
        raise DatasetError(f"{label_path}: label size {label.shape} differs from image size {image.shape[:2]}")
    edge = None
    if edges:
        edge_path = data_dir / EDGE_DIR / f"{name}.png"
        edge = load_edge_file(edge_path)
        if edge.shape == label.shape:
            edge = downsample_edges(edge)
        elif edge.shape != edge_size(label.shape):
            raise DatasetError(f"{edge_path}: edge map size {edge.shape}, expected {edge_size(label.shape)} "
                               f"or {label.shape}")
    return image, label, edge


class MFDataset(Dataset):
    """Frames of one split of an MFNet-format folder.

    ``edges``: "auto" uses ``edge_4x`` when it holds every frame of the split, True requires it,
    False ignores it. ``augment``: True for :class:`JointAugment` defaults, or a JointAugment.
    Augmentation draws from ``np.random.default_rng([seed, epoch, index])``, so it is reproducible
    and independent of DataLoader workers; call :meth:`set_epoch` each epoch (the epoch lives in
    shared memory, so persistent workers see it too).
    ``ignore_index``: a label id left out of the losses; items with edges then carry ``edge_valid`` (0 on
    the 1/4-size cells within the edge radius of an ignored pixel, the radius the edge maps were made with:
    ``edge_4x/edges.json``, see util.data.layout.read_edge_radius; read only then, so a broken record does
    not stop a loader without an ignored class or without edges). ``native_label``: keep the label
    at the frame's own size (evaluation at native resolution) while the image is resized.
    ``n_class``: the number of classes (label ids must lie below it; the folder's dataset.json says it).
    ``check``: verify the split's files first (label ids decoded, image headers read) and raise
    :class:`DatasetError` listing every problem.
    """

    def __init__(self, data_dir: Union[str, os.PathLike], split: str, height: int = 480, width: int = 640,
                 augment: Union[bool, JointAugment] = False, seed: int = 0, edges: Union[str, bool] = "auto", *,
                 n_class: int, check: bool = True, ignore_index: Optional[int] = None,
                 native_label: bool = False):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.split = split
        if height < EDGE_STRIDE or width < EDGE_STRIDE:
            raise ValueError(f"MFDataset: height and width must be >= {EDGE_STRIDE}, got {height}x{width}")
        if seed < 0:
            raise ValueError(f"MFDataset: seed must be >= 0, got {seed}")
        self.height, self.width, self.seed, self.n_class = int(height), int(width), int(seed), n_class
        self.ignore_index, self.native_label = ignore_index, native_label
        if not self.data_dir.is_dir():
            raise DatasetError(f"{self.data_dir}: data folder not found")
        self._names = read_split(self.data_dir, split)

        if edges not in ("auto", True, False):
            raise ValueError(f"MFDataset: edges must be 'auto', True or False, got {edges!r}")
        edges = edges if edges == "auto" else bool(edges)
        edge_dir = self.data_dir / EDGE_DIR
        missing = [n for n in self._names if not (edge_dir / f"{n}.png").is_file()] if edge_dir.is_dir() else None
        hint = f"make them with: python -m util.edges --data-dir {data_dir}"
        if edges is True and missing is None:
            raise DatasetError(f"{edge_dir}: folder not found; edges=True needs edge_4x/NAME.png for every "
                               f"frame of {split} ({hint})")
        if edges is True and missing:
            raise DatasetError(f"{edge_dir}: no edge map for {len(missing)} frame(s) of {split}, e.g. "
                               f"{missing[0]}.png ({hint})")
        if edges == "auto" and missing:
            warnings.warn(f"{edge_dir}: no edge map for {len(missing)} frame(s) of {split}, e.g. {missing[0]}.png; "
                          f"loading {split} without edges ({hint})")
        self._edges = edges is True or (edges == "auto" and missing == [])
        uses_radius = self._edges and ignore_index is not None  # only the edge_valid mask needs it

        if augment is True:
            augment = JointAugment()
        self.augment: Optional[JointAugment] = augment or None
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        if check:
            verify_dataset(self.data_dir, [split], n_class, need_edges=self._edges, decode_images=False,
                           progress=False, edge_record=uses_radius)
        self._ignore_kernel = disc_kernel(read_edge_radius(self.data_dir)) if uses_radius else None

    @property
    def has_edges(self) -> bool:
        """Whether items carry an ``edge`` entry."""
        return self._edges

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (>= 0)."""
        if epoch < 0:
            raise ValueError(f"MFDataset.set_epoch: epoch must be >= 0, got {epoch}")
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return (f"MFDataset({str(self.data_dir)!r}, {self.split!r}, {len(self)} frames, {self.height}x{self.width}, "
                f"edges={self._edges}, augment={self.augment})")

    def __getitem__(self, index: int) -> dict:
        name = self._names[index]
        image, label, edge = read_frame(self.data_dir, name, self._edges)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, label, edge = self.augment(image, label, edge, rng)
        size = (self.width, self.height)  # cv2 takes (width, height)
        if image.shape[:2] != (self.height, self.width):
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            if not self.native_label:
                label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST_EXACT)
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0),
            "label": torch.from_numpy(label.astype(np.int64)),
            "name": name,
        }
        if edge is not None:
            eh, ew = edge_size((self.height, self.width))
            if edge.shape != (eh, ew):
                edge = cv2.resize(edge, (ew, eh), interpolation=cv2.INTER_NEAREST_EXACT)
            item["edge"] = torch.from_numpy(edge.astype(np.float32))[None]
            if self.ignore_index is not None:
                near = downsample_edges(cv2.dilate((label == self.ignore_index).astype(np.uint8), self._ignore_kernel))
                item["edge_valid"] = torch.from_numpy(1.0 - near.astype(np.float32))[None]
        return item
