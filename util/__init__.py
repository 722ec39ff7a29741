"""Everything besides the networks, by concern:

    data/     MFNet-format folders: loading, augmentation, edge labels, checks, synthetic data, converters
    engine/   training and evaluation mechanics: configs, loop, evaluation, checkpoints, runs, metrics
    deploy/   the student on a robot: ONNX export, runtimes, frame sources, inference
    demo.py   what run_demo_teacher.py / run_demo_student.py do

The modules at this level besides demo.py are the commands (`python -m util.edges`,
`util.synthetic`, `util.check_dataset`, `util.convert`, `util.export`).
"""
