"""Deployment of the student: ONNX export (fp32, int8), runtimes behind one interface, the choice
among them, and segmenting a user's frames (`run_demo_student.py --input`): a Source, a Predictor and
Sinks through one loop. Reading frames and their pixel rules (files, videos, streams, ROS bags) is
util/data's (frames.py, rosbag.py).

    export.py    python -m util.export: EKNet -> ONNX, checked with onnxruntime
    quantize.py  static int8 copies (uint8 activations x int8 per-channel weights), tuned by measurement
    onnxfile.py  ONNX files written atomically, their metadata
    backends.py  TorchSegmenter (fp32, bf16) / OnnxSegmenter / OpenVinoSegmenter: one interface
    choose.py    --backend auto|torch|onnxruntime|openvino, --precision: the fastest path that agrees
    cpu.py       the CPU's model and bf16/VNNI/AMX flags
    runtimes.py  onnxruntime and OpenVINO imported without writing under the home folder
    agreement.py logits differences, argmax agreement, interleaved timing
    sources.py   Source: image files, a video, a ROS bag topic, a camera or stream; which options apply
    predictor.py Predictor: the segmenter, resizing, temporal smoothing, confidence
    sinks.py     Sink: frame pictures, label maps, the overlay video, the output bag
    segment.py   segment(source, predictor, sinks): the one loop, batches, Ctrl-C, the summary
"""
