"""The training and evaluation engine shared by the trainers, the demos and the pipeline.

    config.py       TeacherConfig / StudentConfig (the release's defaults), flags, checks
    resume.py       what --resume names, the run's saved options and which of them may change
    distributed.py  Session: processes (torchrun) and device; collective helpers
    loaders.py      training loaders, evaluation splits (exactly sharded over processes)
    mixing.py       batches of labelled and unlabeled frames (trainStudent.py --unlabeled-per-batch)
    build.py        seeds, the network on its device (channels-last, DDP), SGD + ExponentialLR
    loop.py         train_step, train_one_epoch, evaluate (the one evaluation loop)
    run.py          Run: the run folder, checkpoints each epoch, resume, logs, final test
    checkpoint.py   our checkpoints and the release's state dicts; build_from_weights -> (model, its classes)
    metrics.py      the on-device confusion matrix, IoU / recall / precision, reports
    tta.py          test-time augmentation (--tta): scales read in windows, horizontal flip, mean softmax
    plots.py        confusion.png and per_class_iou.png (matplotlib, imported lazily); TensorBoard's heat map
    card.py         model cards beside weights files (card.json, MODEL_CARD.md); the check of a copy
    pictures.py     colour pictures of labels, thermal frames and edge maps; panels
    folders.py      new output folders, a run folder's file names, the run lock, strict JSON files
    cli.py          a trainer's command line: its checked config (class count resolved); one-line errors
"""
from .build import make_optimizer, prepare_model, seed_everything
from .checkpoint import CheckpointError, build_from_weights, export_release, load_state, save_atomic, unwrap
from .cli import load_config, resolve, run_cli
from .config import AMP_MODES, ConfigError, StudentConfig, TeacherConfig, TrainConfig, add_common_args
from .distributed import Session
from .loaders import Data, present_splits, split_loader, training_data
from .loop import evaluate, train_one_epoch, train_step
from .run import Run, RunStopped, open_run, test_best

__all__ = ["AMP_MODES", "CheckpointError", "ConfigError", "Data", "Run", "RunStopped", "Session", "StudentConfig",
           "TeacherConfig", "TrainConfig", "add_common_args", "build_from_weights", "evaluate", "export_release",
           "load_config", "load_state", "make_optimizer", "open_run", "present_splits", "prepare_model", "resolve",
           "run_cli", "save_atomic", "seed_everything", "split_loader", "test_best", "train_one_epoch", "train_step",
           "training_data", "unwrap"]
