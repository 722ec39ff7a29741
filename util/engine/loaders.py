"""Data loaders of a training run, and the one way to find and load evaluation splits.

Training batches come from a DistributedSampler (each process its share, reshuffled per
epoch from the seed). Validation and test splits are sharded without padding or shuffling
(`ShardSampler`), so the confusion matrices summed over processes count every frame once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler, Sampler

from ..data import MFDataset, verify_dataset
from ..data.check import verify_unlabeled
from ..data.info import DatasetInfo, load_dataset_info, unlabeled_thermal_range
from ..data.layout import frame_sizes, split_path
from ..data.unlabeled import Labelled, UnlabeledDataset
from .config import DEFAULT_DATA_DIR, with_data_classes
from .distributed import Session, barrier
from .mixing import MixedBatchSampler


class ShardSampler(Sampler):
    """Every `world_size`-th index from `rank`, unshuffled, no padding (exact distributed metrics)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def present_splits(data_dir: str | Path, splits: Sequence[str]) -> list[str]:
    """The splits of `splits` that have a split file in `data_dir`."""
    return [s for s in splits if split_path(data_dir, s).is_file()]


def split_loader(data_dir: str | Path, split: str, height: int, width: int, n_class: int, *,
                 batch_size: int = 1, workers: int = 0, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False) -> DataLoader:
    """An evaluation loader of one split (already checked), sharded over processes; labels at
    their native size (metrics at native resolution)."""
    ds = MFDataset(data_dir, split, height=height, width=width, n_class=n_class, edges=False, check=False,
                   native_label=True)
    return DataLoader(ds, batch_size, sampler=ShardSampler(len(ds), rank, world_size), num_workers=workers,
                      pin_memory=pin_memory, persistent_workers=False)


@dataclass
class Data:
    """The loaders of a training run, the test splits it ends with, and what the dataset is."""
    info: DatasetInfo
    train_set: MFDataset
    sampler: DistributedSampler
    train: DataLoader
    val: DataLoader
    test_splits: list[str] = field(default_factory=list)
    unlabeled_sets: list[UnlabeledDataset] = field(default_factory=list)  # trainStudent.py --unlabeled
    frames: dict[str, Any] = field(default_factory=dict)  # what the training set holds (run.json), when mixed

    def set_epoch(self, epoch: int) -> None:
        """Select epoch `epoch`'s shuffling and augmentation draws."""
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        for pool in self.unlabeled_sets:
            pool.set_epoch(epoch)


def training_data(cfg, session: Session, edges: str | bool) -> Data:
    """Train and val loaders; every frame of train, val and the test splits is checked first.

    The synthetic data are generated when the default data folder is absent. `cfg` holds its class
    count already (cli.resolve fills it in); the data folder must still agree.
    """
    from ..data.synthetic import ensure_synthetic

    if session.is_main and cfg.data_dir == DEFAULT_DATA_DIR and not Path(cfg.data_dir).exists():
        session.log(f"generating the synthetic MFNet-format data in {cfg.data_dir}")
        ensure_synthetic(cfg.data_dir)
    barrier()
    if cfg.n_class is None:
        raise TypeError("training_data: cfg.n_class is not resolved (pass the config through cli.resolve)")
    data_info = load_dataset_info(cfg.data_dir)
    with_data_classes(cfg, data_info)  # ConfigError when the folder disagrees with cfg.n_class
    info, device = session.info, session.device
    tests = present_splits(cfg.data_dir, cfg.eval_splits)
    common = dict(height=cfg.height, width=cfg.width, n_class=cfg.n_class, seed=cfg.seed,
                  ignore_index=data_info.ignore_index)
    train_set = MFDataset(cfg.data_dir, "train", augment=cfg.augment, edges=edges, check=False, **common)
    # every split now, so that a broken test split fails before training rather than after the last epoch;
    # edge maps are needed for train only
    show = session.is_main and cfg.progress
    verify_dataset(cfg.data_dir, ["train"], cfg.n_class, need_edges=train_set.has_edges, progress=show)
    verify_dataset(cfg.data_dir, ["val", *tests], cfg.n_class, progress=show)
    pools = unlabeled_sets(cfg, show)
    for pool in pools:
        pool_range = unlabeled_thermal_range(pool.data_dir)
        if pool_range != data_info.thermal_range and (pool_range or data_info.thermal_range):
            session.log(f"note: the thermal of {pool.data_dir} is {_scaling(pool_range)}, that of {cfg.data_dir} "
                        f"{_scaling(data_info.thermal_range)}: one temperature is not one grey value in both "
                        f"(convert both with the same --raw-range)")
    val_set = MFDataset(cfg.data_dir, "val", edges=False, check=False, native_label=True, **common)
    kw = dict(num_workers=cfg.workers, pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0)
    if pools:
        sampler, train, frames = mixed_train_loader(cfg, session, train_set, pools, kw)
    else:
        sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=False)
        train, frames = DataLoader(train_set, cfg.batch_size, sampler=sampler, drop_last=False, **kw), {}
    val = DataLoader(val_set, cfg.batch_size, sampler=ShardSampler(len(val_set), info.rank, info.world_size), **kw)
    return Data(data_info, train_set, sampler, train, val, tests, pools, frames)


def _scaling(thermal_range) -> str:
    if thermal_range is None:
        return "8-bit as recorded"
    return f"from the 16-bit range [{thermal_range[0]:g}, {thermal_range[1]:g}]"


def unlabeled_sets(cfg, show: bool) -> list[UnlabeledDataset]:
    """The --unlabeled folders (none for the teacher), each checked: every frame decoded once (then
    cached), 4-channel, the size of the labelled train frames."""
    dirs = getattr(cfg, "unlabeled", ())
    if not dirs:
        return []
    sizes = frame_sizes(cfg.data_dir, "train")
    for d in dirs:
        verify_unlabeled(d, sizes, f"{cfg.data_dir} train", progress=show)
    return [UnlabeledDataset(d, cfg.height, cfg.width, cfg.augment, cfg.seed, stream=i + 1)
            for i, d in enumerate(dirs)]


def mixed_train_loader(cfg, session: Session, train_set: MFDataset, pools: list[UnlabeledDataset],
                       kw: dict) -> tuple[Any, DataLoader, dict[str, Any]]:
    """(sampler, loader, description) of the labelled train split mixed with unlabeled frames
    (util/engine/mixing.py): items carry `labelled`; the indices of the labelled frames come first."""
    info = session.info
    n_lab = 0 if cfg.unlabeled_only else len(train_set)
    n_unl = sum(len(p) for p in pools)
    full = ConcatDataset(([] if cfg.unlabeled_only else [Labelled(train_set)]) + pools)
    frames = {"labelled": n_lab, "unlabeled": n_unl, "unlabeled_sets": {str(p.data_dir): len(p) for p in pools}}
    if cfg.unlabeled_per_batch:
        sampler = MixedBatchSampler(n_lab, n_unl, cfg.batch_size, cfg.unlabeled_per_batch, cfg.seed,
                                    info.rank, info.world_size)
        frames["mix"] = (f"{cfg.batch_size - cfg.unlabeled_per_batch} labelled + {cfg.unlabeled_per_batch} "
                         f"unlabeled per batch; an epoch is one pass over the labelled frames")
        frames["per_epoch"] = {"labelled": sampler.labelled_share * info.world_size,  # padded as DistributedSampler
                               "unlabeled": sampler.unlabeled_per_epoch * info.world_size}
        return sampler, DataLoader(full, batch_sampler=sampler, **kw), frames
    sampler = DistributedSampler(full, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed,
                                 drop_last=False)
    frames["mix"] = "every frame once per epoch, labelled and unlabeled shuffled together"
    frames["per_epoch"] = {"labelled": n_lab, "unlabeled": n_unl}  # (a few repeated to fill the last processes)
    return sampler, DataLoader(full, cfg.batch_size, sampler=sampler, drop_last=False, **kw), frames
