"""What run_demo_teacher.py and run_demo_student.py do: evaluate weights on MFNet splits
(the release's report, with speed), or segment a user's own thermal frames (student).

Outputs go to a new folder under runs/: results.json, confusion_<split>.npy/.csv, confusion.png and
per_class_iou.png (util/engine/plots.py),
predictions/<split>/NAME.png (colourised), panels/<split>/NAME.png
(thermal | RGB | ground truth | prediction). Nothing existing is overwritten.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .data import verify_dataset
from .data.info import DatasetInfo, load_dataset_info
from .data.mfnet import TEST_SPLITS
from .deploy.sinks import DEFAULT_PREFIX
from .engine.card import check_against_card
from .engine.checkpoint import NETWORK_ROLE, Loaded, build_from_weights, model_config
from .engine.cli import run_cli
from .engine.config import AMP_MODES, COMMON_SPECS, check_amp, given_options, parse_device
from .engine.folders import new_run_dir, write_json
from .engine.loaders import present_splits, split_loader
from .engine.loop import evaluate
from .engine.metrics import format_report, write_confusion_csv
from .engine.pictures import colorize, frame_panel, save_rgb
from .engine.plots import write_evaluation_plots
from .engine.tta import DEFAULT_SCALES, TTA
from .files import atomic_write
from .options import ArgumentParser, LowHigh, fraction, integer, number

SMOOTHING = fraction()  # --temporal-smoothing ALPHA: 0 is off
TTA_SCALE = number(above=0, high=4)
# options of the evaluation's test-time augmentation, refused with --input and without --tta
TTA_ONLY = {"scales", "no_flip"}
# options of `--input` only (own frames, bags, live sources, the inference path), refused without it
INPUT_ONLY = {"thermal_range", "batch_size", "save_labels", "temporal_smoothing", "topic", "topic_prefix",
              "confidence", "max_frames", "backend", "precision", "min_agreement"}

TOPIC_NAME = re.compile(r"^/?[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")

RELEASE_WEIGHTS = {"CENet": "weights_backup/Teacher_model/final.pth",
                   "EKNet": "weights_backup/Student_model/final.pth"}
WARMUP_FRAMES = 5
INTERRUPTED = ("interrupted (Ctrl-C); no results were written "
               "(an output folder, if one was made, holds part of the outputs)")


def add_demo_args(p: argparse.ArgumentParser, network: str) -> argparse.ArgumentParser:
    p.add_argument("--weights", default=RELEASE_WEIGHTS[network],
                   help="released final.pth or our checkpoint (best.pth, last.pth, final.pth)")
    p.add_argument("--data-dir", default="dataset/synthetic", help="MFNet-format folder")
    p.add_argument("--splits", nargs="+", default=None, type=COMMON_SPECS["eval_splits"],
                   help=f"splits to evaluate (default: those of {' '.join(TEST_SPLITS)} present)")
    p.add_argument("--n-class", type=COMMON_SPECS["n_class"], default=None, help="expected class count (checked against the weights)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--run-name", type=COMMON_SPECS["run_name"], default=None, help="output folder under --runs-dir (default: demo and time)")
    p.add_argument("--panels", type=integer(-1), default=-1,
                   help="side-by-side panels for the first N frames of each split (-1: all, 0: none)")
    p.add_argument("--no-predictions", action="store_true", help="do not save colourised predictions")
    p.add_argument("--amp", default="none", type=COMMON_SPECS["amp"],
                   help=f"autocast precision: {', '.join(AMP_MODES)} (changes results slightly; off by default)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels-last memory format: faster on CPU and GPU, same results (default: on)")
    p.add_argument("--workers", type=COMMON_SPECS["workers"], default=2)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation as CMX, Sigma and CRM_RGBTSeg report MFNet: every --scales and a "
                        "horizontal flip, softmax averaged at the label's size (default off: the release's "
                        "single-scale evaluation)")
    p.add_argument("--scales", type=TTA_SCALE, nargs="+", default=None, metavar="S",
                   help=f"with --tta: input scales (default {' '.join(f'{s:g}' for s in DEFAULT_SCALES)})")
    p.add_argument("--no-flip", action="store_true", help="with --tta: no horizontal flip (scales only)")
    if network == "EKNet":
        p.add_argument("--input", default=None,
                       help="segment your own thermal frames instead of evaluating on --data-dir: a video "
                            "(mp4, avi, mkv, mov, ...), an image, a folder of 8/16-bit PNG/TIFF, JPEG or "
                            "4-channel MFNet PNGs, a ROS 1 .bag or ROS 2 bag folder, a camera index or a "
                            "stream URL; --weights may then also be an .onnx file (python -m util.export)")
        p.add_argument("--thermal-range", type=number(), action=LowHigh, default=None,
                       help="fixed raw-value range mapped to [0, 1] (every frame); default: the training data's "
                            "thermal_range for 16-bit and float frames when the weights carry one, else per-frame "
                            "min-max")
        p.add_argument("--batch-size", type=integer(1), default=1, help="frames per forward pass with --input")
        p.add_argument("--save-labels", action="store_true",
                       help="with a video, bag or live --input, also write each frame's class ids as "
                            "labels/NAME_i.png")
        p.add_argument("--temporal-smoothing", type=SMOOTHING, default=0.0, metavar="ALPHA",
                       help="average class probabilities over consecutive frames, ALPHA = weight of the past "
                            "in [0, 1) (default 0: off)")
        add_recording_args(p)
        add_inference_args(p)
    return p


def topic_prefix(text: str) -> str:
    """argparse type of --topic-prefix: a ROS name such as /cekd or /robot/cekd."""
    if not TOPIC_NAME.match(text):
        raise argparse.ArgumentTypeError(f"expected a ROS topic name such as /cekd, got {text!r}")
    return "/" + text.strip("/")


def add_recording_args(p: argparse.ArgumentParser) -> None:
    """--topic, --topic-prefix, --confidence (a bag --input) and --max-frames of --input."""
    p.add_argument("--topic", default=None,
                   help="with a bag --input: the thermal image topic (default: the only single-channel one)")
    p.add_argument("--topic-prefix", type=topic_prefix, default=DEFAULT_PREFIX,
                   help="with a bag --input: topics of the output bag (PREFIX/labels, PREFIX/overlay, ...)")
    p.add_argument("--confidence", action="store_true",
                   help="with a bag --input: also write PREFIX/confidence (mono8, max softmax probability x 255)")
    p.add_argument("--max-frames", type=integer(1), default=None,
                   help="stop after N frames of any --input (Ctrl-C also stops cleanly, after the frames read)")


def add_inference_args(p: argparse.ArgumentParser) -> None:
    """--backend, --precision and --min-agreement of --input (util/deploy/choose.py)."""
    from .deploy.agreement import agreement_percent
    from .deploy.choose import BACKEND_CHOICES, PRECISION_CHOICES
    from .options import one_of

    p.add_argument("--backend", type=one_of(BACKEND_CHOICES), default="auto",
                   help=f"{', '.join(BACKEND_CHOICES)}; with --input: auto (default) times the paths the weights offer on a few input frames "
                        "(PyTorch fp32/bf16 for .pth; onnxruntime and OpenVINO, and NAME.int8.onnx beside an "
                        ".onnx file) and takes the fastest that agrees with fp32; the choice is cached")
    p.add_argument("--precision", type=one_of(PRECISION_CHOICES), default="auto",
                   help="auto, fp32 or bf16; with --input: auto: bf16 where the CPU (or GPU) has it natively, else fp32 "
                        "(with --backend auto: both measured); bf16: PyTorch autocast or OpenVINO's hint")
    p.add_argument("--min-agreement", type=agreement_percent, default=None, metavar="PERCENT",
                   help="with --backend auto: least argmax agreement with fp32 (default 99, int8 files 97)")


def load_model(path: str, network: str, device: torch.device, n_class: Optional[int]) -> Loaded:
    """The network the weights file describes, in eval mode on `device`, and its classes; clear errors."""
    if not Path(path).is_file():
        role = "Teacher_model" if network == "CENet" else "Student_model"
        raise FileNotFoundError(
            f"weights file not found: {path}. Download the released {role}/final.pth (link in the "
            f"lab-sun/CEKD README) into weights_backup/{role}/, or pass --weights runs/<run>/best.pth")
    model, info = build_from_weights(path, expect=network)
    if n_class is not None and model.n_class != n_class:
        raise ValueError(f"{path} holds a {model.n_class}-class {network}, but --n-class {n_class} was given")
    return Loaded(model.to(device).eval(), info)


def evaluate_split(model: nn.Module, loader: DataLoader, device: torch.device, out_dir: Path, split: str,
                   panels: int, save_predictions: bool, amp: str, channels_last: bool, show: bool,
                   info: DatasetInfo, tta: Optional[TTA] = None) -> dict:
    """Batch-1 evaluation with per-frame timing; predictions, panels and the confusion matrix to `out_dir`."""
    def save_pictures(i: int, batch, pred: torch.Tensor) -> None:
        name = batch["name"][0]
        if save_predictions:
            save_rgb(out_dir / "predictions" / split / f"{name}.png", colorize(pred[0].cpu(), info.palette))
        if panels < 0 or i < panels:
            image = batch["image"][0]
            if pred.shape[-2:] != image.shape[-2:]:  # evaluated at the label's size: show the frame at it too
                image = F.interpolate(image[None], size=pred.shape[-2:], mode="bilinear", align_corners=False)[0]
            save_rgb(out_dir / "panels" / split / f"{name}.png",
                     frame_panel(image, batch["label"][0], pred[0], info.palette, titles=True))

    ev = evaluate(model, loader, device, model.n_class, amp=amp, channels_last=channels_last, show=show,
                  desc=split, timed=True, ignore_index=info.ignore_index, on_batch=save_pictures, tta=tta)
    mat = ev.confusion.mat.cpu().numpy()
    atomic_write(out_dir / f"confusion_{split}.npy", lambda f: np.save(f, mat), binary=True)
    write_confusion_csv(out_dir / f"confusion_{split}.csv", mat, info.class_names)
    timed = ev.seconds[WARMUP_FRAMES:]
    ms = 1000 * float(np.mean(timed)) if timed else float("nan")
    return {"metrics": ev.confusion.compute(), "confusion": mat, "ms_per_frame": ms, "fps": 1000 / ms if timed else float("nan"),
            "timed_frames": len(timed)}


def check_classes(model: nn.Module, weights: str, data_dir: str, info: DatasetInfo) -> None:
    """Blame the weights, not the labels, when their class count is not the data's."""
    if model.n_class != info.n_class:
        raise ValueError(f"--weights {weights}: holds a {model.n_class}-class {type(model).__name__}, but the data "
                         f"in {data_dir} have {info.n_class} classes ({info.name}); pass weights trained on them")


def run_evaluation(args: argparse.Namespace, network: str) -> dict:
    device = parse_device(args.device)
    channels_last = args.channels_last
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    check_amp(args.amp, device)
    card = check_against_card(args.weights)  # a damaged or swapped copy stops here, before anything is written
    model = load_model(args.weights, network, device, args.n_class).model
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    info = load_dataset_info(args.data_dir)  # first: an unlabeled set is named as one, with or without --splits
    splits = args.splits or present_splits(args.data_dir, TEST_SPLITS)
    if not splits:
        raise FileNotFoundError(f"{args.data_dir}: none of {', '.join(TEST_SPLITS)}.txt found; pass --splits")
    check_classes(model, args.weights, args.data_dir, info)
    verify_dataset(args.data_dir, splits, model.n_class, progress=not args.no_progress)  # every frame, once
    loaders = {s: split_loader(args.data_dir, s, model.height, model.width, model.n_class, workers=args.workers)
               for s in splits}
    out_dir = new_run_dir(args.runs_dir, args.run_name, f"demo-{NETWORK_ROLE[network]}")
    show = not args.no_progress
    tta = TTA(tuple(args.scales or DEFAULT_SCALES), not args.no_flip) if args.tta else None
    if card is not None:
        print(f"[{network}] {args.weights} matches its card {card}", flush=True)
    print(f"[{network}] weights {args.weights}  device {device}  output {out_dir}"
          + (f"  {tta.describe()}" if tta else ""), flush=True)
    results = {"network": network, "weights": str(args.weights), "config": model_config(model),
               "device": str(device), "amp": args.amp, "channels_last": channels_last,
               "dataset": info.to_dict(), "class_names": list(info.class_names), "splits": {}}
    if tta is not None:  # the release's evaluation writes no such key
        results["tta"] = tta.to_dict()
    matrices = {}
    for split, loader in loaders.items():
        ds = loader.dataset
        r = evaluate_split(model, loader, device, out_dir, split, args.panels, not args.no_predictions,
                           args.amp, channels_last, show, info, tta)
        m = r.pop("metrics")
        matrices[split] = r.pop("confusion")
        title = (f"[{network}] {split}: {len(ds)} images of {model.height}x{model.width}, "
                 f"{r['ms_per_frame']:.1f} ms/frame ({r['fps']:.1f} FPS, batch 1, after {WARMUP_FRAMES} warm-up frames)"
                 + (f"\n[{network}] {tta.describe()}, timed together" if tta else ""))
        print(format_report(m, info.class_names, title=title), flush=True)
        results["splits"][split] = {"images": len(ds), "height": model.height, "width": model.width, **r, **m}
    write_evaluation_plots(out_dir, matrices, {s: r["iou"] for s, r in results["splits"].items()}, info.class_names,
                           f"{network} {Path(args.weights).name}" + (f", {tta.describe()}" if tta else ""),
                           info.ignore_index)
    write_json(results, out_dir / "results.json")
    print(f"[{network}] results in {out_dir / 'results.json'}; confusion.png, per_class_iou.png beside it", flush=True)
    results["out_dir"] = str(out_dir)
    return results


def _describe_range(thermal_range) -> Optional[dict]:
    """summary.json's record of how 16-bit frames were scaled (None: per-frame min-max)."""
    from .data.frames import TrainedRange

    if thermal_range is None:
        return None
    if isinstance(thermal_range, TrainedRange):
        return {"low": thermal_range.low, "high": thermal_range.high, "from": "the weights' training data",
                "applies_to": "16-bit and float frames"}
    return {"low": thermal_range[0], "high": thermal_range[1], "from": "--thermal-range",
            "applies_to": "every frame"}


def _gpu_peak_since_reset(device: torch.device) -> Optional[float]:
    """GiB torch allocated at most on a CUDA device since the last call (None elsewhere); starts a new count."""
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def run_own_frames(args: argparse.Namespace) -> dict:
    """Segment --input (image files, a video, a ROS bag topic, a camera or stream) with PyTorch or ONNX
    weights: a Source, a Predictor and Sinks through util/deploy/segment.py; outputs and summary.json."""
    from .data.frames import TrainedRange, frame_scaling
    from .deploy.choose import TIMED_FRAMES, open_segmenter, sample_frames
    from .deploy.predictor import Predictor
    from .deploy.segment import report_lines, segment
    from .deploy.sinks import sinks_for
    from .deploy.sources import open_source, refuse_options, source_kind

    check_against_card(args.weights)  # .pth or .onnx: a damaged or swapped copy stops here
    given = [o for o, on in (("topic", args.topic is not None), ("confidence", args.confidence),
                             ("topic_prefix", args.topic_prefix != DEFAULT_PREFIX),
                             ("max_frames", args.max_frames is not None)) if on]
    refuse_options(source_kind(args.input), given, args.input)
    source = open_source(args.input, args.topic)  # checked here: a bag's topic, a stream's connection
    device = parse_device(args.device)

    def sample(height: int, width: int) -> np.ndarray:  # frames to time the backends on
        return sample_frames(source.samples(TIMED_FRAMES, args.thermal_range), TIMED_FRAMES, height, width)

    seg, inference = open_segmenter(args.weights, device, args.backend, args.precision, args.min_agreement,
                                    lambda: load_model(args.weights, "EKNet", device, args.n_class), sample,
                                    args.channels_last, log=lambda line: print(f"[EKNet] {line}", flush=True))
    if args.n_class is not None and seg.n_class != args.n_class:
        raise ValueError(f"{args.weights} holds a {seg.n_class}-class EKNet, but --n-class {args.n_class} was given")
    scaling = frame_scaling(args.thermal_range, seg.info.thermal_range)
    if isinstance(scaling, TrainedRange):
        print(f"[EKNet] 16-bit and float frames scaled as the training data were: raw range "
              f"[{scaling.low:g}, {scaling.high:g}] ({seg.info.name}'s thermal_range, carried by the "
              f"weights; --thermal-range LOW HIGH overrides it)", flush=True)
    out_dir = new_run_dir(args.runs_dir, args.run_name, "segment")
    choosing_peak = _gpu_peak_since_reset(device)  # loading, timing the paths, capturing graphs
    print(f"[EKNet] {source.describe()} from {args.input} -> {out_dir}  ({seg.name}, batch {args.batch_size})",
          flush=True)
    predictor = Predictor(seg, args.temporal_smoothing, confidence=args.confidence)
    sinks = sinks_for(source, out_dir, args.save_labels, args.topic_prefix, args.confidence)
    summary = segment(source, predictor, sinks, scaling, args.batch_size, args.max_frames, not args.no_progress)
    summary.update({"weights": str(args.weights), "input": str(args.input),
                    "thermal_range": _describe_range(scaling),
                    "inference": {**inference, "path": seg.name,
                                  "ms_per_frame": 1000 / summary["model_frames_per_second"]}})
    if device.type == "cuda":
        summary["inference"]["gpu_memory_gib"] = {"choosing_peak": choosing_peak,
                                                  "segmenting_peak": _gpu_peak_since_reset(device)}
    if getattr(seg, "graphs", None) is not None:
        summary["inference"]["cuda_graphs"] = seg.graphs.describe()
    write_json(summary, out_dir / "summary.json")
    print("\n".join(f"[EKNet] {line}" for line in report_lines(summary, out_dir)), flush=True)
    if not summary["segmented"]:
        first = summary["skipped"][0]["reason"] if summary["skipped"] else "no frames"
        raise ValueError(f"--input {args.input}: no frame could be segmented ({first})")
    summary["out_dir"] = str(out_dir)
    return summary


def main_for(network: str, argv: Optional[list[str]] = None) -> dict:
    role = NETWORK_ROLE[network]
    parser = add_demo_args(ArgumentParser(prog=f"run_demo_{role}.py",
                                          description=f"Evaluate the CEKD {role} ({network})."), network)
    args = parser.parse_args(argv)
    tta_given = sorted(TTA_ONLY & given_options(parser, argv))
    if getattr(args, "input", None) and (args.tta or tta_given):
        parser.error("--tta: only for the evaluation on --data-dir (--input segments each frame once, on the "
                     "deployment path its --backend chose)")
    if tta_given and not args.tta:
        parser.error(", ".join("--" + name.replace("_", "-") for name in tta_given) + ": only with --tta")
    if network == "EKNet" and not args.input:
        stray = sorted(INPUT_ONLY & given_options(parser, argv))
        if stray:
            parser.error(", ".join("--" + name.replace("_", "-") for name in stray)
                         + ": only with --input (the evaluation on --data-dir runs the PyTorch model as given)")
    if getattr(args, "input", None):
        return run_cli(lambda: run_own_frames(args), INTERRUPTED)
    return run_cli(lambda: run_evaluation(args, network), INTERRUPTED)
