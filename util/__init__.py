"""Everything besides the networks, by concern:

    data/     MFNet-format folders: layout, loading, augmentation, edge labels, checks, synthetic data,
              converters, owned output folders
    engine/   training and evaluation mechanics: configs, resume, loop, evaluation, checkpoints, runs, metrics
    deploy/   the student on a robot: ONNX export, runtimes, frame sources (files, videos, bags, live),
              inference, bags to data folders
    demo.py   what run_demo_teacher.py / run_demo_student.py do
    files.py  atomic file writes (the one writer) and the cache folder
    options.py  one parser and range check for every command-line option

The floors import downwards only: model -> data -> engine -> deploy -> the scripts (files.py and
options.py import nothing of the project; tests/test_imports.py checks it).

The modules at this level besides demo.py are the commands (`python -m util.edges`,
`util.synthetic`, `util.check_dataset`, `util.convert`, `util.export`, `util.card`).
"""
