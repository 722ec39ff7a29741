"""Data: MFNet-format folders and everything that reads, makes or checks them.

    mfnet.py     MFNet's facts: class names, palette, split names, edge stride and radius
    layout.py    a data folder's layout: folder names, split files, file readers and writers, channel order
                 (OpenCV's B, G, R <-> R, G, B), the edge radius record (edge_4x/edges.json), DatasetError
    info.py      dataset.json: a dataset's name, classes, palette and ignored label id
    dataset.py   MFDataset, the loader (RGB-T image, label, 1/4-size edge map)
    augment.py   joint flip and crop of image, label and edge map
    edges.py     edge labels from label maps (the paper's Edge Labels Generation)
    check.py     the dataset check: every problem of a folder at once, with the file
    owned.py     output folders written whole: work folder, manifest, refusing others' folders, swap-in
    scene.py     the synthetic scene renderer (one RGB-thermal road frame and its labels)
    synthetic.py a small procedural stand-in for MFNet: writes whole folders of scene.py's frames
    sources.py   the source datasets (PST900, FMB, a user's folders): plans and file readers
    thermal.py   16-bit thermal to 8 bits: the scaling rule and its percentile range
    convert.py   python -m util.convert: sources checked, then written into our layout
    bag_convert.py python -m util.convert rosbag: an unlabeled set from a ROS bag
    frames.py    thermal frames of image files, videos, cameras and streams (one Frame each); the grey rule
                 and the scaling to [0, 1]
    rosbag.py    ROS 1 / ROS 2 bags read without ROS: image topics, their frames
    bag_pixels.py  the pixels of sensor_msgs/Image and CompressedImage messages
    bag_records.py damaged bags read record by record up to the damage
    unlabeled.py frames without labels (for distilling on unlabeled recordings)
    media.py     OpenCV's and FFmpeg's own logging off (the one place; our errors say what went wrong)
"""
from .check import check_dataset, verify_dataset
from .dataset import MFDataset, read_frame
from .layout import DatasetError, load_image_file, load_label_file, read_split

__all__ = ["DatasetError", "MFDataset", "check_dataset", "load_image_file", "load_label_file", "read_frame",
           "read_split", "verify_dataset"]
