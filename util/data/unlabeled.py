"""RGB-thermal frames without labels, for distilling the student on recordings nobody labelled.

An unlabeled set (see util/data/info.py) holds ``images/NAME.png`` (4-channel uint8: R, G, B,
thermal) and ``train.txt``; a labelled folder can serve as one (its train split's images; its labels
are never opened). Items look like :class:`~util.data.dataset.MFDataset`'s, so that both collate
into one batch: ``image`` float32 (4, H, W) in [0, 1], ``label`` int64 (H, W) of zeros (a
placeholder, never scored), ``name`` and ``labelled`` (False; :class:`Labelled` marks the labelled
frames True). The CEKD terms read only the teacher's output, which sees all four channels; the
optional ground-truth term skips every frame whose ``labelled`` is False.

Augmentation draws from ``np.random.default_rng([seed, epoch, index, stream])`` (``stream`` >= 1
tells the folders apart, and apart from the labelled frames' ``[seed, epoch, index]``), so it is
reproducible and independent of DataLoader workers.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from util.data.augment import JointAugment
from util.data.layout import IMAGE_DIR, load_image_file, read_split


class UnlabeledDataset(Dataset):
    """The frames of ``data_dir/train.txt`` (already checked with util.data.check.check_unlabeled),
    resized to (height, width), optionally augmented with :class:`JointAugment`."""

    def __init__(self, data_dir: Union[str, os.PathLike], height: int, width: int,
                 augment: Union[bool, JointAugment] = False, seed: int = 0, stream: int = 1):
        super().__init__()
        if stream < 1:
            raise ValueError(f"UnlabeledDataset: stream must be >= 1 (0 is the labelled frames'), got {stream}")
        self.data_dir, self.height, self.width = Path(data_dir), int(height), int(width)
        self.seed, self.stream = int(seed), int(stream)
        self._names = read_split(self.data_dir, "train")
        self.augment: Optional[JointAugment] = (JointAugment() if augment is True else augment) or None
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"UnlabeledDataset({str(self.data_dir)!r}, {len(self)} frames, {self.height}x{self.width})"

    def __getitem__(self, index: int) -> dict:
        name = self._names[index]
        image = load_image_file(self.data_dir / IMAGE_DIR / f"{name}.png")
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, int(self._epoch[0]), index, self.stream])
            placeholder = np.zeros(image.shape[:2], np.uint8)
            image, _, _ = self.augment(image, placeholder, None, rng)
        if image.shape[:2] != (self.height, self.width):
            image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        return {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0),
                "label": torch.zeros(self.height, self.width, dtype=torch.int64),
                "name": name, "labelled": False}


class Labelled(Dataset):
    """A labelled dataset whose items also say ``labelled: True`` (to mix with unlabeled frames)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "labelled": True}
