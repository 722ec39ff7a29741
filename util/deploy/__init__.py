"""Deployment of the student: ONNX export (fp32, int8), runtimes behind one interface, the choice
among them, frame sources (images, folders, videos, ROS bags, live streams) and inference on a
user's recordings.

    export.py    python -m util.export: EKNet -> ONNX, checked with onnxruntime
    quantize.py  static int8 copies (uint8 activations x int8 per-channel weights), tuned by measurement
    onnxfile.py  ONNX files written atomically, their metadata
    backends.py  TorchSegmenter (fp32, bf16) / OnnxSegmenter / OpenVinoSegmenter: one interface
    choose.py    --backend auto|torch|onnxruntime|openvino, --precision: the fastest path that agrees
    cpu.py       the CPU's model and bf16/VNNI/AMX flags
    runtimes.py  onnxruntime and OpenVINO imported without writing under the home folder
    agreement.py logits differences, argmax agreement, interleaved timing
    frames.py    thermal frames from PNG/TIFF/JPEG files, folders and videos, scaled to [0, 1]
    inference.py segmenting frames and videos in batches; masks, overlays, label maps
    rosbag.py    ROS 1 / ROS 2 bags in (thermal topics) and out (labels, overlay, confidence)
    bag_pixels.py  the pixels of sensor_msgs/Image and CompressedImage messages
    bag_records.py damaged bags read record by record up to the damage
    bag_dataset.py python -m util.convert rosbag: an unlabeled data folder from a bag (written by util/data)
    live.py      camera indices and stream URLs; Ctrl-C ends cleanly
    recording.py bags and live sources in the demo (topics, output bag, summary)
    smoothing.py temporal smoothing of class probabilities; confidence
"""
