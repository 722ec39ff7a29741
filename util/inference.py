"""The student on a user's own thermal frames (not in MFNet layout).

Accepted files: single-channel 8-bit or 16-bit PNG/TIFF (also float TIFF), and MFNet-style
4-channel PNGs (channel 4 = thermal). Scaling to [0, 1]:
- 8-bit: value / 255, as MFNet's thermal channel.
- 16-bit and float: per-frame min-max (the coldest pixel -> 0, the hottest -> 1) by default,
  or a fixed range `thermal_range=(low, high)` (values clipped), which keeps a fixed
  temperature-to-intensity mapping across frames of a radiometric camera.
Frames are resized to the model size (bilinear) and the prediction back to the frame size
(nearest).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .engine.pictures import colorize, overlay, save_rgb, thermal_to_rgb

FRAME_EXTENSIONS = (".png", ".tif", ".tiff")


def list_frames(path: str | os.PathLike) -> list[Path]:
    """The image files to segment: `path` itself, or the frames directly inside a folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS)
    raise FileNotFoundError(f"--input {path}: no such file or folder")


def read_thermal(path: str | os.PathLike, thermal_range: Optional[Sequence[float]] = None) -> np.ndarray:
    """One thermal frame as float32 (H, W) in [0, 1]; ValueError naming the file when unusable."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"{path}: cannot read the image (missing, corrupt or not an image)")
    if raw.ndim == 3:
        if raw.shape[2] == 4:
            raw = raw[:, :, 3]  # BGRA from cv2: alpha is MFNet's thermal channel
        elif raw.shape[2] == 3 and np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 1], raw[..., 2]):
            raw = raw[:, :, 0]  # grey saved as RGB
        else:
            raise ValueError(f"{path}: expected a single-channel thermal image or a 4-channel MFNet PNG, "
                             f"got {raw.shape[2]} channels")
    if thermal_range is not None:
        low, high = map(float, thermal_range)
        return np.clip((raw.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / 255.0
    x = raw.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


@torch.inference_mode()
def predict_frame(model: nn.Module, thermal: np.ndarray, device: torch.device) -> np.ndarray:
    """Class ids (H, W) uint8 for one thermal frame at its own size."""
    t = torch.from_numpy(thermal)[None, None].to(device)
    x = F.interpolate(t, size=(model.height, model.width), mode="bilinear", align_corners=False)
    pred = model(x.clamp(0, 1)).logits.argmax(1, keepdim=True).to(torch.uint8)
    pred = F.interpolate(pred, size=thermal.shape, mode="nearest")
    return pred[0, 0].cpu().numpy()


def segment_frames(model: nn.Module, paths: Sequence[Path], device: torch.device, out_dir: Path,
                   thermal_range: Optional[Sequence[float]] = None, show: bool = True) -> dict:
    """Segment every frame; write NAME_mask.png, NAME_overlay.png and NAME_label.png (class ids).

    An unreadable frame is reported by name and skipped; the others go on.
    """
    model.eval()
    stems = [p.stem for p in paths]
    done, skipped = [], []
    for p in tqdm(paths, desc="segmenting", disable=not show, dynamic_ncols=True):
        name = p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix[1:]}"
        try:
            thermal = read_thermal(p, thermal_range)
        except ValueError as exc:
            tqdm.write(f"skipped: {exc}")
            skipped.append({"file": str(p), "reason": str(exc)})
            continue
        pred = predict_frame(model, thermal, device)
        mask = colorize(pred)
        save_rgb(out_dir / f"{name}_mask.png", mask)
        save_rgb(out_dir / f"{name}_overlay.png", overlay(thermal_to_rgb(thermal), mask, 0.5))
        if not cv2.imwrite(str(out_dir / f"{name}_label.png"), pred):
            raise OSError(f"{out_dir / f'{name}_label.png'}: could not write")
        done.append({"file": str(p), "output": name, "height": int(pred.shape[0]), "width": int(pred.shape[1]),
                     "class_pixels": np.bincount(pred.ravel(), minlength=model.n_class).tolist()})
    return {"segmented": done, "skipped": skipped}
