"""Facts about the MFNet dataset shared by every module: class names, palette, split names."""
from __future__ import annotations

N_CLASS = 9

CLASS_NAMES: tuple[str, ...] = (
    "unlabeled", "car", "person", "bike", "curve",
    "car_stop", "guardrail", "color_cone", "bump",
)

# RGB colour of each class id (the MFNet palette of RTFNet's pictures), used for every colour picture.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 192),
    (128, 128, 0), (64, 64, 128), (192, 128, 128), (192, 64, 0),
)

STANDARD_SPLITS: tuple[str, ...] = ("train", "val", "test", "test_day", "test_night")
TEST_SPLITS: tuple[str, ...] = ("test", "test_day", "test_night")

# Edge maps are stored and used at 1/EDGE_STRIDE of the label resolution.
EDGE_STRIDE = 4
# Disc radius (pixels at label resolution) of the released edge_4x maps (DFF's MATLAB code); the default of
# every writer of edge maps, and the radius of a folder whose edge maps carry no record (util.data.layout).
EDGE_RADIUS = 2
