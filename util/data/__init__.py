"""Data: MFNet-format folders and everything that reads, makes or checks them.

    mfnet.py     MFNet's facts: class names, palette, split names, edge stride
    layout.py    a data folder's layout: folder names, split files, file readers, channel order, DatasetError
    info.py      dataset.json: a dataset's name, classes, palette and ignored label id
    dataset.py   MFDataset, the loader (RGB-T image, label, 1/4-size edge map)
    augment.py   joint flip and crop of image, label and edge map
    edges.py     edge labels from label maps (the paper's Edge Labels Generation)
    check.py     the dataset check: every problem of a folder at once, with the file
    synthetic.py a small procedural stand-in for MFNet
    convert.py   PST900, FMB and a user's own folders into our layout
    unlabeled.py frames without labels (for distilling on unlabeled recordings)
    rosbag_set.py  python -m util.convert rosbag: an unlabeled set from a ROS bag
    workdirs.py  hidden work folders beside an output, and removing those of killed processes
"""
from .check import check_dataset, verify_dataset
from .dataset import MFDataset, read_frame
from .layout import DatasetError, load_image_file, load_label_file, read_split

__all__ = ["DatasetError", "MFDataset", "check_dataset", "load_image_file", "load_label_file", "read_frame",
           "read_split", "verify_dataset"]
