"""Train CENet, the RGB-thermal CEKD teacher.

    python trainTeacher.py --data-dir dataset/MFNet --run-name teacher      # the release's recipe
    python trainTeacher.py --resume runs/teacher [--epochs 300]              # continue or extend a run

CENet sees RGB and thermal and learns from cross-entropy on the labels plus the
auto-weighted BCE of its edge head (ED) against edge labels derived from the labels.
The run: config -> data -> model -> loss -> optimiser and schedule -> resume -> per epoch
(train, validate, checkpoint, log) -> the best epoch on the test splits -> final.pth.
"""
from __future__ import annotations

import argparse
from typing import Any, Mapping, Optional

from model import CENet
from model.losses import EDGE_MODES, teacher_loss
from util.engine import (
    Session,
    TeacherConfig,
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
from util.engine.config import TEACHER_SPECS
from util.options import ArgumentParser


class TeacherTask:
    """What CENet learns from: CE(logits, label) + L_edge(edge map, edge label); a dataset's
    ignored label is left out of both."""

    def __init__(self, edge_mode: str = "release", ignore_index: Optional[int] = None):
        self.edge_mode, self.ignore_index = edge_mode, ignore_index

    def loss(self, model, batch: Mapping[str, Any]):
        out = model(batch["inputs"])
        return teacher_loss(out.logits, batch["label"], out.edge, out.edge_logit, batch.get("edge"),
                            self.edge_mode, self.ignore_index, batch.get("edge_valid")), out


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="trainTeacher.py", description="Train the CEKD teacher (CENet, RGB + thermal).")
    add_common_args(p, TeacherConfig())
    p.add_argument("--edge-loss", default=TeacherConfig.edge_loss, type=TEACHER_SPECS["edge_loss"],
                   help=f"{' or '.join(EDGE_MODES)}; release: BCE on the sigmoid output (as released); logit: on the pre-sigmoid logit")
    return p


def main(cfg: TeacherConfig) -> dict:
    with Session(cfg.device) as session:
        data = training_data(cfg, session, edges="auto")  # every frame checked before anything is written
        with open_run(cfg, session, "CENet", role="teacher", info=data.info) as run:
            if not data.train_set.has_edges:
                run.log(f"note: {cfg.data_dir} has no edge_4x maps; training without the edge loss "
                        f"(make them with: python -m util.edges --data-dir {cfg.data_dir})")
            seed_everything(cfg.seed)
            model = prepare_model(CENet(cfg.n_class, cfg.depth, cfg.height, cfg.width, cfg.pretrained), cfg, session)
            task = TeacherTask(cfg.edge_loss, data.info.ignore_index)
            optimizer, scheduler, scaler = make_optimizer(model, cfg)
            run.track(model, optimizer, scheduler, scaler)  # what each checkpoint holds
            run.restore()  # a resumed run continues from its last.pth

            for epoch in run.epochs():
                data.set_epoch(epoch)
                losses, images_per_s = train_one_epoch(model, task, data.train, optimizer, scaler,
                                                       session.device, cfg, epoch, run)
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                val = evaluate(model, data.val, session.device, cfg.n_class, amp=cfg.amp, channels_last=cfg.channels_last,
                               show=run.show, desc=f"epoch {epoch} val", ignore_index=data.info.ignore_index)
                run.end_epoch(epoch, losses, images_per_s, lr, val)
                if run.should_stop(epoch):
                    return run.stopped(epoch)
            results = test_best(model, data, run)
            run.finish(model, results)  # results.json, and final.pth in the release's format
            return results


def cli(argv: Optional[list[str]] = None) -> dict:
    parser = get_args_parser()
    return run_cli(lambda: main(load_config(TeacherConfig, parser, argv)))


if __name__ == "__main__":
    cli()
