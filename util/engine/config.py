"""One typed configuration per trainer, with the release's defaults, checked before anything runs.

`TeacherConfig` and `StudentConfig` hold every option of trainTeacher.py / trainStudent.py.
`add_common_args` declares the options both trainers share on an argparse parser, with
destinations named after the config fields, so `Config(**vars(args))` builds a config.
Choices (ResNet depths, AMP modes, edge-loss modes, student loss terms) are defined here once.

What a resumed run may change lives in resume.py; the class count, when not given, is filled in from
the data folder by cli.resolve: the trainers take resolved configs only.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Optional, Sequence

import torch

from model.encoder import RESNET_DEPTHS
from model.losses import EDGE_MODES, STUDENT_TERMS

from ..data.mfnet import TEST_SPLITS
from ..options import Spec, check_option, folder_name, integer, multiple_of, number, one_of, split_name

if TYPE_CHECKING:  # a type only: the config reads no data folder (cli.resolve does)
    from ..data.info import DatasetInfo

AMP_MODES = ("none", "bf16", "fp16")
DEFAULT_DATA_DIR = "dataset/synthetic"
DEFAULT_TEACHER = "weights_backup/Teacher_model/final.pth"
MIN_SIZE = 64  # TEM pools the input 64-fold


# The accepted range of each numeric or named option, used by argparse (type=) and by `check`.
COMMON_SPECS: dict[str, Spec] = {
    "n_class": integer(2, 256), "depth": one_of(RESNET_DEPTHS, int),
    "height": multiple_of(32, MIN_SIZE), "width": multiple_of(32, MIN_SIZE),
    "epochs": integer(1), "batch_size": integer(1), "seed": integer(0, 2**32 - 1), "workers": integer(0),
    "image_every": integer(0), "stop_after_epochs": integer(0), "max_steps_per_epoch": integer(0),
    "lr": number(above=0), "lr_gamma": number(above=0), "momentum": number(low=0), "weight_decay": number(low=0),
    "amp": one_of(AMP_MODES), "eval_splits": split_name(), "run_name": folder_name(), "sync_every": integer(1),
}
TEACHER_SPECS: dict[str, Spec] = {"edge_loss": one_of(EDGE_MODES)}
STUDENT_SPECS: dict[str, Spec] = {"tau": number(above=0), "gt_weight": number(low=0), "loss_weights": number(low=0)}


class ConfigError(ValueError):
    """An option with a value the run cannot use; the message names the flag."""


def flag(name: str) -> str:
    """The command-line flag of a config field: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


@dataclass
class TrainConfig:
    """Options shared by both trainers (defaults: the release's recipe)."""
    data_dir: str = DEFAULT_DATA_DIR
    n_class: Optional[int] = None  # None: the data folder's (dataset.json, else MFNet's 9)
    depth: int = 50
    height: int = 480
    width: int = 640
    epochs: int = 200
    batch_size: int = 2
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_gamma: float = 0.95
    pretrained: bool = True
    augment: bool = True
    device: str = "auto"
    seed: int = 0
    workers: int = 2
    runs_dir: str = "runs"
    run_name: Optional[str] = None
    resume: Optional[str] = None
    amp: str = "none"
    channels_last: bool = False
    sync_bn: bool = False
    image_every: int = 200
    eval_splits: tuple[str, ...] = TEST_SPLITS
    stop_after_epochs: int = 0
    max_steps_per_epoch: int = 0
    progress: bool = True
    # The GPU's pace (off by default: the release's loop). compile: torch.compile the network (forward
    # and backward); fused_sgd: one fused kernel for the SGD update; sync_every: the host waits for
    # the device (finite-loss check, logged losses) every N steps instead of every step.
    compile: bool = False
    fused_sgd: bool = False
    sync_every: int = 1
    fast: bool = False  # the preset: see fast_preset

    def __post_init__(self) -> None:
        self.eval_splits = tuple(self.eval_splits)

    def check(self) -> None:
        """Raise ConfigError naming the first option whose value cannot work."""
        _check_specs(self, COMMON_SPECS)
        check_amp(self.amp, parse_device(self.device))
        runs = Path(self.runs_dir)
        if runs.exists() and not runs.is_dir():
            raise ConfigError(f"--runs-dir {runs}: is a file, expected a folder")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> "TrainConfig":
        """A config from `to_dict` output, or from the argparse options our first checkpoints saved."""
        saved = dict(saved)
        for old, new in (("no_pretrained", "pretrained"), ("no_augment", "augment"),
                         ("no_progress", "progress"), ("no_distill", "distill")):
            if old in saved:
                saved[new] = not saved.pop(old)
        if isinstance(saved.get("loss_weights"), (list, tuple)):
            saved["loss_weights"] = dict(zip(STUDENT_TERMS, saved["loss_weights"]))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


@dataclass
class TeacherConfig(TrainConfig):
    """trainTeacher.py: CENet on RGB + thermal, CE + edge BCE."""
    network: ClassVar[str] = "CENet"
    edge_loss: str = "release"

    def check(self) -> None:
        super().check()
        _check_specs(self, TEACHER_SPECS)


@dataclass
class StudentConfig(TrainConfig):
    """trainStudent.py: EKNet on thermal, distilled from a frozen CENet (or on ground truth alone)."""
    network: ClassVar[str] = "EKNet"
    teacher: str = DEFAULT_TEACHER
    loss_weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STUDENT_TERMS, 1.0))
    gt_weight: float = 0.0
    tau: float = 6.0
    distill: bool = True
    unlabeled: tuple[str, ...] = ()  # folders of RGB-thermal frames without labels (util/data/unlabeled.py)
    unlabeled_only: bool = False     # train on those alone (the labelled splits still validate and test)
    unlabeled_per_batch: int = 0     # 0: every frame once per epoch, shuffled together; K: K of each batch

    def __post_init__(self) -> None:
        super().__post_init__()
        self.unlabeled = tuple(self.unlabeled)
        if not isinstance(self.loss_weights, Mapping):
            self.loss_weights = dict(zip(STUDENT_TERMS, self.loss_weights))
        self.loss_weights = {k: float(v) for k, v in self.loss_weights.items()}

    def check(self) -> None:
        super().check()
        _check_specs(self, {k: v for k, v in STUDENT_SPECS.items() if k != "loss_weights"})
        unknown = set(self.loss_weights) - set(STUDENT_TERMS)
        if unknown:
            raise ConfigError(f"--loss-weights: unknown term(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(STUDENT_TERMS)}")
        for term, w in self.loss_weights.items():
            try:
                STUDENT_SPECS["loss_weights"].check(w)
            except ValueError as exc:
                raise ConfigError(f"--loss-weights: the {term} weight is {w}; weights {exc}") from None
        self._check_unlabeled()

    def _check_unlabeled(self) -> None:
        if not self.unlabeled:
            for name in ("unlabeled_only", "unlabeled_per_batch"):
                if getattr(self, name):
                    raise ConfigError(f"{flag(name)}: needs --unlabeled DIR (the frames without labels)")
            return
        if not self.distill:
            raise ConfigError("--unlabeled with --no-distill: frames without labels teach nothing without a "
                              "teacher; drop one of them")
        if self.unlabeled_only and self.gt_weight > 0:
            raise ConfigError(f"--gt-weight {self.gt_weight} with --unlabeled-only: no labelled frame is trained "
                              f"on, so the ground-truth term has nothing to read")
        if self.unlabeled_per_batch:
            if self.unlabeled_only:
                raise ConfigError("--unlabeled-per-batch with --unlabeled-only: every frame is unlabeled already")
            if not 1 <= self.unlabeled_per_batch < self.batch_size:
                raise ConfigError(f"--unlabeled-per-batch {self.unlabeled_per_batch}: must be 1..{self.batch_size - 1} "
                                  f"(--batch-size {self.batch_size} less at least one labelled frame)")


def _check_specs(cfg: TrainConfig, specs: Mapping[str, Spec]) -> None:
    """ConfigError naming the first option (in `specs` order) whose value is out of its range."""
    for name, spec in specs.items():
        value = getattr(cfg, name)
        if value is None and name in ("n_class", "run_name"):  # None: from the data folder; role and time
            continue
        try:
            for v in (value if isinstance(value, (tuple, list)) else [value]):
                check_option(flag(name), v, spec)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def check_amp(amp: str, device: torch.device) -> None:
    """Refuse an --amp setting the device cannot run (fp16 autocast here needs CUDA)."""
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU")


def parse_device(spec: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:<local rank> when CUDA is available, else cpu; otherwise a device that exists here."""
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cuda" and torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank}")  # under torchrun: each process its own GPU
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {spec}: not a device name (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise ConfigError(f"--device {spec}: only auto, cpu and cuda devices are supported")
    return device


def add_common_args(p: argparse.ArgumentParser, defaults: TrainConfig) -> argparse.ArgumentParser:
    """The options of both trainers; each `dest` is a config field."""
    d = defaults
    p.add_argument("--data-dir", default=d.data_dir,
                   help=f"MFNet-format folder (default {DEFAULT_DATA_DIR}, generated when absent)")
    p.add_argument("--n-class", type=COMMON_SPECS["n_class"], default=d.n_class,
                   help="class count (default: from the data folder's dataset.json, else MFNet's 9)")
    p.add_argument("--depth", type=COMMON_SPECS["depth"], default=d.depth, help="ResNet depth (18, 34, 50, 101, 152)")
    p.add_argument("--height", type=COMMON_SPECS["height"], default=d.height, help="input height (multiple of 32)")
    p.add_argument("--width", type=COMMON_SPECS["width"], default=d.width, help="input width (multiple of 32)")
    p.add_argument("--epochs", type=COMMON_SPECS["epochs"], default=d.epochs)
    p.add_argument("--batch-size", type=COMMON_SPECS["batch_size"], default=d.batch_size)
    p.add_argument("--lr", type=COMMON_SPECS["lr"], default=d.lr)
    p.add_argument("--momentum", type=COMMON_SPECS["momentum"], default=d.momentum)
    p.add_argument("--weight-decay", type=COMMON_SPECS["weight_decay"], default=d.weight_decay)
    p.add_argument("--lr-gamma", type=COMMON_SPECS["lr_gamma"], default=d.lr_gamma, help="ExponentialLR decay per epoch")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="do not load ImageNet weights")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no flip/crop (as the release's loader)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=COMMON_SPECS["seed"], default=d.seed)
    p.add_argument("--workers", type=COMMON_SPECS["workers"], default=d.workers, help="DataLoader worker processes")
    p.add_argument("--runs-dir", default=d.runs_dir)
    p.add_argument("--run-name", type=COMMON_SPECS["run_name"], default=d.run_name, help="folder under --runs-dir (default: role and time)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR_OR_CKPT",
                   help="continue a run from its last.pth (a run folder or the file); "
                        "--epochs may raise the run's epoch count")
    p.add_argument("--amp", default=d.amp, type=COMMON_SPECS["amp"],
                   help=f"autocast precision ({', '.join(AMP_MODES)})")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPUs (torchrun)")
    p.add_argument("--image-every", type=COMMON_SPECS["image_every"], default=d.image_every,
                   help="TensorBoard pictures every N steps (0: never)")
    p.add_argument("--eval-splits", nargs="*", type=COMMON_SPECS["eval_splits"], default=list(d.eval_splits),
                   help="splits the best checkpoint is tested on at the end (absent ones are skipped)")
    p.add_argument("--stop-after-epochs", type=COMMON_SPECS["stop_after_epochs"], default=d.stop_after_epochs,
                   help="stop this invocation after N epochs (continue later with --resume)")
    p.add_argument("--max-steps-per-epoch", type=COMMON_SPECS["max_steps_per_epoch"], default=d.max_steps_per_epoch,
                   help="cap on training steps per epoch (0: all)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (the first steps compile)")
    p.add_argument("--fused-sgd", action="store_true", help="SGD's update as one fused kernel per step")
    p.add_argument("--sync-every", type=COMMON_SPECS["sync_every"], default=d.sync_every,
                   help="check the loss and log it every N steps (1: every step, as the release)")
    p.add_argument("--fast", action="store_true",
                   help="the GPU preset: " + FAST_HELP + " (options given explicitly keep their value)")
    return p


FAST_SYNC_EVERY = 50
FAST_HELP = (f"--amp bf16 (fp16 where the GPU has no bf16) --channels-last --compile --fused-sgd "
             f"--sync-every {FAST_SYNC_EVERY} on CUDA; on the CPU --fused-sgd --sync-every {FAST_SYNC_EVERY}")


def fast_preset(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """`cfg` with --fast's options where they are still at their defaults (the same losses, batch and
    schedule: only how the device runs them changes)."""
    if not cfg.fast:
        return cfg
    default = type(cfg)()
    preset: dict[str, Any] = {"fused_sgd": True, "sync_every": FAST_SYNC_EVERY}
    if device.type == "cuda":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        preset.update(amp=amp, channels_last=True, compile=True)
    return dataclasses.replace(cfg, **{k: v for k, v in preset.items() if getattr(cfg, k) == getattr(default, k)})


def given_options(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]], known_only: bool = False) -> set[str]:
    """The config fields set explicitly on the command line (parsed again with every default suppressed).

    `known_only` ignores options the parser does not know instead of failing."""
    defaults = [(a, a.default) for a in parser._actions]
    for action, _ in defaults:
        action.default = argparse.SUPPRESS
    try:
        if known_only:
            return set(vars(parser.parse_known_args(argv)[0]))
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in defaults:
            action.default = default


def describe(cfg: TrainConfig) -> str:
    """One line listing the options, e.g. for the log of a resumed run."""
    return " ".join(f"{flag(f.name)}={getattr(cfg, f.name)}" for f in fields(cfg))


def with_data_classes(cfg: TrainConfig, info: DatasetInfo) -> TrainConfig:
    """`cfg` with the class count of its data folder (`info`); ConfigError when --n-class says otherwise."""
    if cfg.n_class is None:
        return dataclasses.replace(cfg, n_class=info.n_class)
    if cfg.n_class != info.n_class:
        raise ConfigError(f"--n-class {cfg.n_class}: the data in {cfg.data_dir} have {info.n_class} classes "
                          f"({info.name}: {', '.join(info.class_names)})")
    return cfg
