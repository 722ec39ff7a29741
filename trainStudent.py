"""Distil EKNet, the thermal-only CEKD student, from a frozen CENet teacher.

    python trainStudent.py --data-dir dataset/MFNet --run-name student --teacher runs/teacher/best.pth
    python trainStudent.py --no-distill ...          # the same student on ground truth alone (baseline)
    python trainStudent.py ... --unlabeled dataset/my-recording [--unlabeled-per-batch 2 | --unlabeled-only]
    python trainStudent.py --resume runs/student [--epochs 300]

EKNet sees thermal only. It learns from the teacher alone (the labels are not used), with
four terms: pairwise similarity of the deepest features (sim), temperature-scaled soft
labels (kdce), the edge-aware hint feature (hint) and CE against the teacher's prediction
(seg); `--gt-weight W` adds CE against the labels. A student of another ResNet family than
its teacher (e.g. ResNet-18 from the released ResNet-50 CENet) learns the hint through a
small adapter (model/hint_adapter.py), saved with the run but not part of the student. Because no
term but the optional one reads a label, `--unlabeled DIR` adds RGB-thermal frames nobody labelled
(util/data/unlabeled.py; mixed into the batches by util/engine/mixing.py); `--gt-weight` then reads
the labelled frames only. The run: config -> teacher -> data -> model -> loss -> optimiser and schedule ->
resume -> per epoch (train, validate, checkpoint, log) -> the best epoch on the test splits
-> final.pth.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from model import EKNet
from model.hint_adapter import HintAdapter, hint_width
from model.losses import STUDENT_TERMS, student_loss, supervised_student_loss
from util.data.info import DatasetInfo
from util.engine import (
    ConfigError,
    Session,
    StudentConfig,
    add_common_args,
    evaluate,
    load_config,
    make_optimizer,
    open_run,
    prepare_model,
    run_cli,
    seed_everything,
    test_best,
    train_one_epoch,
    training_data,
)
from util.engine.checkpoint import build_network, read_weights
from util.engine.config import STUDENT_SPECS
from util.engine.distributed import all_reduce_sum
from util.options import ArgumentParser, integer


class DistillTask:
    """What the student learns from the frozen teacher: the weighted CEKD terms (and, optionally,
    CE on the labels); `adapter` maps the student's hint to the teacher's width."""

    def __init__(self, teacher: nn.Module, weights: Optional[Mapping[str, float]] = None, tau: float = 6.0,
                 adapter: Optional[nn.Module] = None, ignore_index: Optional[int] = None):
        self.teacher, self.weights, self.tau = teacher.eval().requires_grad_(False), dict(weights or {}), tau
        self.adapter, self.ignore_index = adapter, ignore_index
        self.frames = {"labelled": 0, "unlabeled": 0}  # what the teacher saw, counted for batches that mix

    def loss(self, model, batch: Mapping[str, Any]):
        with torch.no_grad():
            out_t = self.teacher(batch["image_full"])
        labelled = batch.get("labelled")  # only in batches that mix in frames without labels (--unlabeled)
        if labelled is not None:
            n_lab = int(labelled.sum())
            self.frames["labelled"] += n_lab
            self.frames["unlabeled"] += out_t.logits.shape[0] - n_lab
        out = model(batch["inputs"])
        return student_loss(out, out_t, self.weights, self.tau, batch["label"], self.ignore_index, self.adapter,
                            labelled), out

    def epoch_frames(self, device: torch.device) -> dict[str, int]:
        """Labelled and unlabeled frames the teacher saw since the last call, over every process."""
        counts = all_reduce_sum(torch.tensor([self.frames["labelled"], self.frames["unlabeled"]], device=device))
        self.frames = {"labelled": 0, "unlabeled": 0}
        return {"labelled": int(counts[0]), "unlabeled": int(counts[1])}


class SupervisedTask:
    """The baseline without a teacher: CE on the ground-truth labels."""

    def __init__(self, ignore_index: Optional[int] = None):
        self.ignore_index = ignore_index

    def loss(self, model, batch: Mapping[str, Any]):
        out = model(batch["inputs"])
        return supervised_student_loss(out, batch["label"], self.ignore_index), out


def load_teacher(cfg: StudentConfig, device: torch.device, data_info: Optional[DatasetInfo] = None) -> nn.Module:
    """The frozen CENet from our checkpoint or a released final.pth, checked against the student (and, when the
    file names its classes, against `data_info`: a teacher of other classes would teach the wrong ids)."""
    if not Path(cfg.teacher).is_file():
        raise FileNotFoundError(
            f"--teacher {cfg.teacher}: file not found; train one with trainTeacher.py or put the released "
            f"Teacher_model/final.pth there (or use --no-distill for a student without teacher)")
    weights = read_weights(cfg.teacher)
    teacher, teacher_info = build_network(weights, cfg.teacher, expect="CENet")
    problems = []
    if (teacher.height, teacher.width) != (cfg.height, cfg.width):
        problems.append(f"input size {teacher.height}x{teacher.width} vs {cfg.height}x{cfg.width}")
    if teacher.n_class != cfg.n_class:
        problems.append(f"{teacher.n_class} classes vs {cfg.n_class}")
    elif data_info is not None and weights.dataset and teacher_info.class_names != data_info.class_names:
        problems.append(f"the classes of {teacher_info.name} ({', '.join(teacher_info.class_names)}) vs those of "
                        f"{data_info.name} ({', '.join(data_info.class_names)})")
    if problems:
        raise ConfigError(f"--teacher {cfg.teacher} does not fit this student: " + "; ".join(problems))
    return teacher.to(device).eval().requires_grad_(False)


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="trainStudent.py",
                       description="Distil the CEKD student (EKNet, thermal only) from a CENet teacher.")
    d = StudentConfig()
    add_common_args(p, d)
    p.add_argument("--teacher", default=d.teacher, help="CENet weights: our checkpoint or the released final.pth")
    p.add_argument("--loss-weights", type=STUDENT_SPECS["loss_weights"], nargs=len(STUDENT_TERMS), default=list(d.loss_weights.values()),
                   metavar=tuple(t.upper() for t in STUDENT_TERMS), help="weight of each distillation term")
    p.add_argument("--gt-weight", type=STUDENT_SPECS["gt_weight"], default=d.gt_weight,
                   help="weight of an added CE term on the ground-truth labels (0: the release's label-free student)")
    p.add_argument("--tau", type=STUDENT_SPECS["tau"], default=d.tau, help="KD temperature")
    p.add_argument("--no-distill", dest="distill", action="store_false",
                   help="train the student on ground truth alone (baseline without a teacher)")
    p.add_argument("--unlabeled", nargs="+", action="extend", default=list(d.unlabeled), metavar="DIR",
                   help="also distil on these RGB-thermal frames without labels (DIR/images/NAME.png listed in "
                        "DIR/train.txt; a labelled folder's train split works too); --gt-weight reads only the "
                        "labelled frames; validation and test stay on --data-dir")
    p.add_argument("--unlabeled-only", action="store_true",
                   help="train on the --unlabeled frames alone (the labelled val/test splits still choose and test)")
    p.add_argument("--unlabeled-per-batch", type=integer(0), default=d.unlabeled_per_batch, metavar="K",
                   help="K unlabeled and batch-size - K labelled frames in every batch, an epoch being one pass "
                        "over the labelled frames (default 0: every frame once per epoch, shuffled together)")
    return p


def main(cfg: StudentConfig) -> dict:
    role = "student" if cfg.distill else "student-gt"
    with Session(cfg.device) as session:
        # data and teacher are checked before the run folder exists: a bad input leaves nothing behind
        data = training_data(cfg, session, edges=False)
        teacher = load_teacher(cfg, session.device, data.info) if cfg.distill else None
        with open_run(cfg, session, "EKNet", role=role, info=data.info, frames=data.frames) as run:
            if data.frames:
                run.log(f"training frames: {data.frames['labelled']} labelled + {data.frames['unlabeled']} unlabeled "
                        f"({data.frames['mix']})")
            seed_everything(cfg.seed)  # the same initial weights with or without a teacher loaded before
            model = prepare_model(EKNet(cfg.n_class, cfg.depth, cfg.height, cfg.width, cfg.pretrained), cfg, session)
            adapter = None
            if teacher is not None and hint_width(teacher.depth) != hint_width(cfg.depth):
                adapter = prepare_model(HintAdapter(hint_width(cfg.depth), hint_width(teacher.depth)), cfg, session)
                run.log(f"hint adapter {hint_width(cfg.depth)} -> {hint_width(teacher.depth)} channels "
                        f"(ResNet-{cfg.depth} student, ResNet-{teacher.depth} teacher)")
            weights = {**cfg.loss_weights, "gt": cfg.gt_weight}
            task = DistillTask(teacher, weights, cfg.tau, adapter, data.info.ignore_index) if teacher is not None \
                else SupervisedTask(data.info.ignore_index)
            optimizer, scheduler, scaler = make_optimizer(model, cfg, adapter.parameters() if adapter else ())
            run.track(model, optimizer, scheduler, scaler, **({"adapter": adapter} if adapter else {}))
            run.restore()  # a resumed run continues from its last.pth

            for epoch in run.epochs():
                data.set_epoch(epoch)
                losses, images_per_s = train_one_epoch(model, task, data.train, optimizer, scaler,
                                                       session.device, cfg, epoch, run)
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                val = evaluate(model, data.val, session.device, cfg.n_class, amp=cfg.amp, channels_last=cfg.channels_last,
                               show=run.show, desc=f"epoch {epoch} val", ignore_index=data.info.ignore_index)
                frames = task.epoch_frames(session.device) if data.unlabeled_sets else None
                run.end_epoch(epoch, losses, images_per_s, lr, val, frames)
                if run.should_stop(epoch):
                    return run.stopped(epoch)
            results = test_best(model, data, run)
            run.finish(model, results)  # results.json, and final.pth in the release's format
            return results


def cli(argv: Optional[list[str]] = None) -> dict:
    parser = get_args_parser()
    return run_cli(lambda: main(load_config(StudentConfig, parser, argv)))


if __name__ == "__main__":
    cli()
