"""Colour pictures of labels, thermal images and edge maps; all arrays are RGB uint8 HxWx3."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.layout import cv2_from_rgb

_TITLE_H = 20  # height of the title strip above each panel image


def _numpy(x: np.ndarray | Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _gray(x: np.ndarray | Tensor) -> np.ndarray:
    """(H,W), (1,H,W) or (H,W,1) -> (H,W)."""
    a = _numpy(x)
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[2]):
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:2])
    if a.ndim != 2:
        raise ValueError(f"expected a single-channel image, got shape {a.shape}")
    return a


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        return np.round(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)
    return np.clip(a, 0, 255).astype(np.uint8)


def colorize(label_map: np.ndarray | Tensor, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Class ids (H,W) -> RGB with `palette` (the dataset's, DatasetInfo.palette); ids outside it are white."""
    colours = np.asarray(palette, dtype=np.uint8)
    ids = _gray(label_map).astype(np.int64)
    out = np.full(ids.shape + (3,), 255, dtype=np.uint8)
    valid = (ids >= 0) & (ids < len(colours))
    out[valid] = colours[ids[valid]]
    return out


def thermal_to_rgb(t: np.ndarray | Tensor) -> np.ndarray:
    """Thermal image (float in [0,1] or uint8) -> grey RGB."""
    return np.repeat(_to_uint8(_gray(t))[..., None], 3, axis=2)


def edge_to_rgb(e: np.ndarray | Tensor) -> np.ndarray:
    """Edge map (bool, {0,1} integers, 0..255 uint8 or probability in [0,1]) -> white on black."""
    a = _gray(e)
    if np.issubdtype(a.dtype, np.integer) and a.size and a.max() <= 1:
        a = a.astype(bool)
    return thermal_to_rgb(a)


def overlay(base_rgb: np.ndarray, mask_rgb: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend: (1 - alpha) * base + alpha * mask."""
    if base_rgb.shape != mask_rgb.shape:
        raise ValueError(f"overlay: shapes {base_rgb.shape} and {mask_rgb.shape} differ")
    out = (1.0 - alpha) * base_rgb.astype(np.float32) + alpha * mask_rgb.astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def make_panel(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, pad: int = 4) -> np.ndarray:
    """Images side by side, each resized to the first one's height (keeping its aspect ratio),
    separated by ``pad`` white columns; with ``titles``, a strip of text above each image.

    Enlarging uses nearest neighbour (label and edge colours stay exact, e.g. 1/4-resolution
    edge maps); shrinking uses area averaging.
    """
    if not images:
        raise ValueError("make_panel needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    height = images[0].shape[0]
    tiles = []
    for i, img in enumerate(images):
        img = thermal_to_rgb(img) if img.ndim == 2 else _to_uint8(np.asarray(img))
        h, w = img.shape[:2]
        if h != height:
            new_w = max(1, round(w * height / h))
            interp = cv2.INTER_NEAREST if height > h else cv2.INTER_AREA
            img = cv2.resize(img, (new_w, height), interpolation=interp)
        if titles is not None:
            strip = np.full((_TITLE_H, img.shape[1], 3), 255, dtype=np.uint8)
            cv2.putText(strip, str(titles[i]), (2, _TITLE_H - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 0, 0), 1, cv2.LINE_AA)
            img = np.concatenate([strip, img], axis=0)
        tiles.append(img)
        if i < len(images) - 1 and pad > 0:
            tiles.append(np.full((img.shape[0], pad, 3), 255, dtype=np.uint8))
    return np.concatenate(tiles, axis=1)


def frame_panel(image: Tensor, label: Tensor, pred: Tensor, palette: Sequence[Sequence[int]],
                edge_target: Tensor | None = None, edge_pred: Tensor | None = None, titles: bool = False) -> np.ndarray:
    """thermal | RGB | ground truth | prediction (| edge target | edge prediction) of one frame.

    ``image`` is a (4, H, W) RGB-T tensor in [0, 1]; edge maps (any size) are shown at (H, W).
    """
    image = image.detach().float().cpu()
    pred = pred.detach().cpu()
    h, w = pred.shape
    tiles = [thermal_to_rgb(image[3]), np.round(image[:3].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
             colorize(label.cpu(), palette), colorize(pred, palette)]
    names = ["thermal", "RGB", "ground truth", "prediction"]
    for e, name in ((edge_target, "edge target"), (edge_pred, "edge prediction")):
        if e is not None:
            e = F.interpolate(e.detach().float().cpu().reshape(1, 1, *e.shape[-2:]), size=(h, w), mode="nearest")
            tiles.append(edge_to_rgb(e[0, 0]))
            names.append(name)
    return make_panel(tiles, titles=names if titles else None)


def save_rgb(path: str | Path, rgb: np.ndarray, overwrite: bool = False) -> Path:
    """Write an RGB (or single-channel) uint8 image as PNG, creating parent folders.

    Refuses to replace an existing file unless ``overwrite`` (FileExistsError)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_rgb writes PNG only, got {path}")
    img = _to_uint8(np.asarray(rgb))
    if img.ndim == 3:
        img = cv2_from_rgb(img)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # "x" fails atomically if the file exists
        with open(path, "wb" if overwrite else "xb") as f:
            f.write(buf.tobytes())
    except FileExistsError:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None
    return path


def tb_image(rgb: np.ndarray) -> Tensor:
    """RGB uint8 HxWx3 -> float tensor (3,H,W) in [0,1] for SummaryWriter.add_image."""
    return torch.from_numpy(np.ascontiguousarray(_to_uint8(np.asarray(rgb)))).permute(2, 0, 1).float() / 255.0
