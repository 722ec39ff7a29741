"""A training run on disk: its folder, TensorBoard log, history, best score and checkpoints.

    runs/<run-name>/run.json    the run's configuration, written when the folder is made
                    last.pth    everything needed to resume (atomic, every epoch)
                    best.pth    the weights of the best validation epoch
                    final.pth   those weights with the release's key names (at the end)
                    results.json, confusion.png, per_class_iou.png, tb/
                    card.json, MODEL_CARD.md   what the weights files are (card.py), after each write

Only the main process writes. A folder that holds no checkpoint yet (a run stopped or
killed before its first epoch ended) is not a dead end: running or resuming it again
starts it from scratch; a run stopped after its last epoch but before its final test is
finished by --resume. A model whose weights or validation loss stop being finite is
never written; the run stops naming the epoch and the last good checkpoint.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn

from ..data.info import DatasetInfo
from ..files import DiskFullError, remove_partial_writes
from .card import command_line, environment, file_entries, split_lists, teacher_facts, write_card
from .checkpoint import (
    FORMAT,
    TRAINER,
    VERSION,
    export_release,
    first_non_finite,
    load_state,
    model_config,
    read_training_checkpoint,
    save_atomic,
    unwrap,
)
from .config import TrainConfig, describe
from .distributed import Session, barrier, broadcast_object
from .folders import BEST, CONFIG_FILE, FINAL, LAST, RESULTS, claim_folder, new_run_dir, write_json
from .loaders import Data, split_loader
from .loop import EMPTY_BATCHES, evaluate
from .metrics import format_report
from .pictures import frame_panel, tb_image
from .plots import confusion_figure, figure_rgb, write_evaluation_plots
from .resume import holds_nothing, network_of_run, restartable, resume_target


class RunStopped(RuntimeError):
    """The run ended early (diverged or interrupted); the message says where its checkpoint is."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class Run:
    """One training run: use `with open_run(...) as run:`; the log is closed on every exit path."""

    def __init__(self, cfg: TrainConfig, session: Session, network: str, role: str, folder: Path,
                 checkpoint: Optional[dict], info: DatasetInfo, claim=None, frames: Optional[Mapping[str, Any]] = None):
        self.cfg, self.session, self.network, self.role, self.dir = cfg, session, network, role, folder
        self._claim = claim  # the open run.lock that makes the folder this process's (main process)
        self.info = info
        self.checkpoint = checkpoint
        self.start_epoch, self.step, self.best, self.history = 0, 0, {"miou": -1.0, "epoch": 0}, []
        self.is_main = session.is_main
        self.show = self.is_main and cfg.progress
        self._done_this_call = 0
        self._state: dict[str, Any] = {}
        self.frames = frames  # labelled / unlabeled training frames (runs that mix), for the card
        self._card_facts: Optional[dict] = None
        self._file_hashes: dict = {}  # file_entries' memory: a weights file is hashed once per write
        self.writer = None
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(folder / "tb"))

    # ------------------------------------------------------------------ set-up
    def log(self, msg: str) -> None:
        self.session.log(f"[{self.role}] {msg}")

    def track(self, model: nn.Module, optimizer, scheduler, scaler, **extra: nn.Module) -> None:
        """What each checkpoint holds: the model, its optimiser, schedule and AMP scaler, and `extra`
        trained modules (the student's hint adapter)."""
        self._state = dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, extra=extra)

    def restore(self) -> None:
        """A resumed run: load what `track` named from last.pth and continue after its epoch (a new run: nothing)."""
        ckpt, s = self.checkpoint, self._state
        if ckpt is None:
            return
        unwrap(s["model"]).load_state_dict(ckpt["model"])
        s["optimizer"].load_state_dict(ckpt["optimizer"])
        s["scheduler"].load_state_dict(ckpt["lr_scheduler"])
        if s["scaler"] is not None and ckpt.get("scaler"):
            s["scaler"].load_state_dict(ckpt["scaler"])
        for name, module in s["extra"].items():
            unwrap(module).load_state_dict(ckpt["extra"][name])
        self.start_epoch, self.step, self.best, self.history = ckpt["epoch"], ckpt["step"], ckpt["best"], ckpt["history"]
        self.checkpoint = None  # free the memory
        self.log(f"resumed from {self.dir / 'last.pth'} after epoch {self.start_epoch}")

    def epochs(self) -> range:
        return range(self.start_epoch + 1, self.cfg.epochs + 1)

    # ------------------------------------------------------------------ per step / epoch
    def after_step(self, losses: Mapping[str, torch.Tensor], lr: float, batch: Mapping[str, Any], out: Any) -> None:
        if self.writer is None:
            return
        if (self.step - 1) % self.cfg.sync_every == 0:  # reading a loss waits for the device: every N steps
            for k, v in losses.items():
                self.writer.add_scalar(f"train/{k}", v.item(), self.step)
            self.writer.add_scalar("train/lr", lr, self.step)
        every = self.cfg.image_every
        if every and self.step % every == 0:
            edge = getattr(out, "edge", None)  # the teacher's edge map, shown with its target
            panel = frame_panel(batch["image"][0], batch["label"][0], out.logits[0].detach().argmax(0),
                                self.info.palette, batch["edge"][0] if edge is not None and "edge" in batch else None,
                                edge[0] if edge is not None else None)
            self.writer.add_image("train/thermal_rgb_gt_pred_edges", tb_image(panel), self.step)

    def end_epoch(self, epoch: int, losses: dict[str, float], images_per_s: float, lr: float, val,
                  frames: Optional[dict[str, int]] = None) -> None:
        """Check the model is finite, record the epoch, write best.pth (if best) then last.pth, log.
        `frames`: the labelled and unlabeled frames the epoch trained on (runs that mix them)."""
        bad = next((b for b in map(first_non_finite, [self._state["model"], *self._state["extra"].values()])
                    if b is not None), None)
        if bad is not None or not math.isfinite(val.loss):
            cause = f"the weight {bad} holds NaN or inf" if bad else f"the validation loss is {val.loss}"
            raise self._stopped(f"training diverged in epoch {epoch}: {cause}; nothing of this epoch was saved")
        metrics = val.confusion.compute()
        record = {"epoch": epoch, "lr": lr, "train": losses, "val_loss": val.loss, "val_miou": metrics["miou"],
                  "val_macc": metrics["macc"], "images_per_s": images_per_s,
                  "seconds": time.perf_counter() - self._t_epoch}
        if frames is not None:
            record["frames"] = frames
        self.history.append(record)
        is_best = metrics["miou"] > self.best["miou"]
        if is_best:
            self.best = {"miou": metrics["miou"], "epoch": epoch}
        if self.is_main:
            self._log_epoch(record, metrics, epoch)
            self.writer.add_image("val/confusion", figure_rgb(confusion_figure(
                {f"val, epoch {epoch}": val.confusion.mat.cpu().numpy()}, self.info.class_names)), epoch,
                dataformats="HWC")
            state = self._checkpoint(epoch)
            if is_best:  # best first: a kill between the two writes never leaves last ahead of best
                save_atomic({k: state[k] for k in ("format", "version", "network", "config", "model", "epoch", "args",
                                                   "dataset")},
                            self.dir / BEST)
            save_atomic(state, self.dir / LAST)
            self.write_card()
            print(f"[{self.role}] epoch {epoch}/{self.cfg.epochs}  loss {losses.get('total', float('nan')):.4f}  "
                  f"val mIoU {100 * metrics['miou']:.2f}  mAcc {100 * metrics['macc']:.2f}  "
                  f"{images_per_s:.1f} img/s  {record['seconds']:.0f}s" + ("  (best)" if is_best else "")
                  + (f"  {losses[EMPTY_BATCHES]} batch(es) held only the ignored class "
                     f"(no label loss from them)" if losses.get(EMPTY_BATCHES) else "")
                  + (f"  frames {frames['labelled']} labelled + {frames['unlabeled']} unlabeled" if frames else ""),
                  flush=True)
        self._done_this_call += 1
        self._t_epoch = time.perf_counter()

    def _checkpoint(self, epoch: int) -> dict:
        s = self._state
        return {"format": FORMAT, "version": VERSION, "network": self.network, "config": model_config(s["model"]),
                "model": unwrap(s["model"]).state_dict(), "optimizer": s["optimizer"].state_dict(),
                "lr_scheduler": s["scheduler"].state_dict(),
                "scaler": s["scaler"].state_dict() if s["scaler"] else None,
                "extra": {k: unwrap(m).state_dict() for k, m in s["extra"].items()},
                "epoch": epoch, "step": self.step, "best": self.best, "history": self.history,
                "args": self.cfg.to_dict(), "dataset": self.info.to_dict()}

    def _log_epoch(self, record: dict, val: dict, epoch: int) -> None:
        w = self.writer
        w.add_scalar("val/loss", record["val_loss"], epoch)
        w.add_scalar("val/mIoU", val["miou"], epoch)
        w.add_scalar("val/mAcc", val["macc"], epoch)
        w.add_scalar("train/images_per_s", record["images_per_s"], epoch)
        w.add_scalar("train/epoch_lr", record["lr"], epoch)
        for name, iou in zip(self.info.class_names, val["iou"]):
            if not np.isnan(iou):
                w.add_scalar(f"val_iou/{name}", iou, epoch)

    def should_stop(self, epoch: int) -> bool:
        """--stop-after-epochs N reached in this invocation (and the run is not finished)."""
        n = self.cfg.stop_after_epochs
        return bool(n) and self._done_this_call >= n and epoch < self.cfg.epochs

    def resume_command(self) -> str:
        return f"python {TRAINER[self.network]} --resume {self.dir}"

    def stopped(self, epoch: int) -> dict:
        self.log(f"stopped after {self._done_this_call} epoch(s); continue with: {self.resume_command()}")
        return {"run_dir": str(self.dir), "stopped_at_epoch": epoch}

    # ------------------------------------------------------------------ the end
    def finish(self, model: nn.Module, results: dict) -> None:
        """results.json, and the best weights as final.pth with the release's key names."""
        if self.is_main:
            export_release(model, self.dir / FINAL)
            write_json(results, self.dir / RESULTS)
            self.write_card(results)
            print(f"[{self.role}] results in {self.dir / 'results.json'}; "
                  f"release-format weights {self.dir / 'final.pth'}", flush=True)

    def write_card(self, results: Optional[dict] = None) -> None:
        """card.json and MODEL_CARD.md of the weights files now in the folder; with the final test's `results`."""
        cfg, model = self.cfg, self._state["model"]
        if self._card_facts is None:  # what does not change during the run, read once
            teacher = getattr(cfg, "teacher", None) if getattr(cfg, "distill", False) else None
            splits = split_lists(cfg.data_dir)
            frames = dict(self.frames) if self.frames else {
                "labelled": splits.get("train", {}).get("frames", 0), "unlabeled": 0}
            self._card_facts = {
                "data": {"name": self.info.name, "data_dir": str(cfg.data_dir), "splits": splits, "frames": frames,
                         "unlabeled_sets": {str(d): split_lists(d, ("train",)) for d in getattr(cfg, "unlabeled", ())}},
                "teacher": teacher_facts(teacher) if teacher else None,
                "command": command_line(), "environment": environment(self.session.device)}
        best = next((h for h in self.history if h["epoch"] == self.best["epoch"]), None)
        metrics = {"val": {"epoch": best["epoch"], "miou": best["val_miou"], "macc": best["val_macc"],
                           "loss": best["val_loss"]}} if best else {}
        metrics.update((results or {}).get("splits", {}))
        done = self.history[-1]["epoch"] if self.history else 0
        write_card(self.dir, {
            "role": self.role,
            "summary": f"{self.network} ({self.role}) trained by {TRAINER[self.network]}: {done} of {cfg.epochs} "
                       f"epochs" + (", tested" if results else ""),
            "network": {"name": self.network, **model_config(model),
                        "input": "RGB + thermal (4 channels)" if self.network == "CENet" else "thermal (1 channel)"},
            "classes": list(self.info.class_names), "dataset": self.info.to_dict(),
            "data": self._card_facts["data"], "teacher": self._card_facts["teacher"],
            "command": self._card_facts["command"], "config": cfg.to_dict(),
            "epochs_done": done, "best_epoch": self.best["epoch"], "metrics": metrics,
            "environment": self._card_facts["environment"],
            "files": file_entries(self.dir, (BEST, LAST, FINAL), self._file_hashes)})

    def _last_good(self) -> str:
        last = self.dir / LAST
        if not last.is_file():
            return "no checkpoint was written yet"
        epoch = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["epoch"]
        return f"the last good checkpoint is {last} (epoch {epoch}); continue with: {self.resume_command()}"

    def _stopped(self, reason: str, exit_code: int = 1) -> RunStopped:
        return RunStopped(f"{reason}; {self._last_good()}", exit_code)

    def __enter__(self) -> "Run":
        self._t_epoch = time.perf_counter()
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if self.writer is not None:
            self.writer.close()
        if self._claim is not None:
            self._claim.close()
        if kind is KeyboardInterrupt:
            raise self._stopped("interrupted (Ctrl-C)", exit_code=130) from None
        if kind is FloatingPointError:
            raise self._stopped(f"training stopped: {exc}") from None
        if kind is DiskFullError:
            raise self._stopped(exc.strerror) from None
        return False


def open_run(cfg: TrainConfig, session: Session, network: str, role: str, info: DatasetInfo,
             frames: Optional[Mapping[str, Any]] = None) -> Run:
    """The run folder: a new one, one that holds no checkpoint yet (started again), or the one
    being resumed (its last.pth read and checked). Call it after every input has been checked.
    `frames` (runs that mix in unlabeled frames) is recorded in run.json."""
    checkpoint, folder = None, None
    if cfg.resume:
        folder, ckpt_path = resume_target(cfg.resume)
        if ckpt_path.is_file():
            checkpoint = read_training_checkpoint(ckpt_path, network)
            done = checkpoint["epoch"]
            finished = (folder / RESULTS).is_file()
            if done > cfg.epochs or (done == cfg.epochs and finished):
                raise ValueError(f"--resume {cfg.resume}: the run has {'finished its' if finished else 'done'} "
                                 f"{done} epochs; pass --epochs N with N > {done} to extend it")
            what = (f"after epoch {done} of {cfg.epochs}" if done < cfg.epochs else
                    f"whose {done} epochs are done but not its final test: testing its best epoch")
            session.log(f"[{role}] resuming {folder} {what}, with its saved options: {describe(cfg)}")
        elif not restartable(folder):
            raise FileNotFoundError(f"--resume {cfg.resume}: no checkpoint {ckpt_path}, and not a run folder "
                                    f"of this trainer that could start again")
        else:
            session.log(f"[{role}] {folder} holds no checkpoint yet: starting the run from scratch"
                        + (" with the options given (it was stopped before it saved its own)"
                           if holds_nothing(folder) else ""))
    elif session.is_main:
        folder = Path(cfg.runs_dir) / cfg.run_name if cfg.run_name else None
        if folder is not None and folder.is_dir() and restartable(folder) and (
                holds_nothing(folder) or network_of_run(folder) == network):
            session.log(f"[{role}] {folder} holds no checkpoint yet: starting the run from scratch")
        else:
            folder = new_run_dir(cfg.runs_dir, cfg.run_name, role, " or continue it with --resume {path}")
    claim, refused = None, None
    if session.is_main:
        try:
            claim = claim_folder(folder)  # before anything in it is written
        except FileExistsError as exc:
            refused = str(exc)
    folder, refused = broadcast_object((str(folder), refused) if session.is_main else None)
    if refused:  # every process stops, none waits for the others
        raise FileExistsError(refused)
    folder = Path(folder)
    if session.is_main:
        remove_partial_writes(folder)
        if checkpoint is None:
            record = {"network": network, "role": role, "config": cfg.to_dict()}
            if frames:
                record["frames"] = dict(frames)
            write_json(record, folder / CONFIG_FILE)
    barrier()
    session.log(f"[{role}] run folder {folder}  device {session.device}  processes {session.info.world_size}")
    return Run(cfg, session, network, role, folder, checkpoint, info, claim, frames)


def test_best(model: nn.Module, data: Data, run: Run) -> dict:
    """The best validation epoch's weights on every test split; the results (not yet written)."""
    cfg, session = run.cfg, run.session
    barrier()  # rank 0 has written best.pth
    load_state(model, run.dir / BEST)
    results = {"role": run.role, "run_dir": str(run.dir), "best_epoch": run.best["epoch"],
               "best_val_miou": run.best["miou"], "config": model_config(model), "dataset": run.info.to_dict(),
               "class_names": list(run.info.class_names), "splits": {}, "history": run.history}
    matrices = {}
    for split in data.test_splits:
        loader = split_loader(cfg.data_dir, split, cfg.height, cfg.width, cfg.n_class, workers=cfg.workers,
                              rank=session.info.rank, world_size=session.info.world_size)
        ev = evaluate(model, loader, session.device, cfg.n_class, amp=cfg.amp, channels_last=cfg.channels_last,
                      show=run.show, desc=split, ignore_index=run.info.ignore_index)
        metrics = ev.confusion.compute()
        matrices[split] = ev.confusion.mat.cpu().numpy()
        results["splits"][split] = {"images": len(loader.dataset), **metrics}
        run.log(format_report(metrics, run.info.class_names, title=f"{split}: {len(loader.dataset)} images, best epoch {run.best['epoch']}"))
    if run.is_main and matrices:  # confusion.png and per_class_iou.png beside results.json
        write_evaluation_plots(run.dir, matrices, {s: r["iou"] for s, r in results["splits"].items()},
                               run.info.class_names, f"{run.role} {run.dir.name}, best epoch {run.best['epoch']}",
                               run.info.ignore_index)
    return results
