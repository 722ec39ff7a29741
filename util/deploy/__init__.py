"""Deployment of the student: ONNX export (fp32, int8), runtimes behind one interface, frame
sources (images, folders, videos) and inference on a user's recordings.

    export.py    python -m util.export: EKNet -> ONNX, checked with onnxruntime; static int8
    backends.py  TorchSegmenter / OnnxSegmenter: one interface, chosen by the weights' suffix
    frames.py    thermal frames from PNG/TIFF/JPEG files, folders and videos, scaled to [0, 1]
    inference.py segmenting frames and videos in batches; masks, overlays, label maps
"""
