"""Issue 16, class 1: every option of every command is parsed and range-checked by one mechanism
(util/options.py), and a bad value ends in one line naming the option and its range, before anything
is read or written."""
import argparse

import pytest

import run_cekd
import run_demo_student
import run_demo_teacher
import trainStudent
import trainTeacher
from util import options
from util.data import bag_convert as bag_dataset, check as check_cmd, convert, edges, synthetic
from util.deploy import export
from util.engine.config import ConfigError, StudentConfig, TeacherConfig

ARABIC_3 = "\u0663"  # int() accepts it; an option must not


@pytest.mark.parametrize("spec, text, value", [
    (options.integer(0), "7", 7), (options.integer(-1, 3), " -1 ", -1), (options.number(above=0), "1e-3", 1e-3),
    (options.fraction(), "0", 0.0), (options.fraction(zero=False, one=True), "1", 1.0),
    (options.one_of((18, 34), int), "34", 34), (options.multiple_of(32, 64), "96", 96),
    (options.palette(), "0,0,0; 255,10,0", [(0, 0, 0), (255, 10, 0)]), (options.id_map(65535), "255=0", (255, 0)),
    (options.split_name(), "test_day", "test_day"), (options.folder_name(), "teacher run 2", "teacher run 2"),
])
def test_good_values_parse(spec, text, value):
    assert spec(text) == value


@pytest.mark.parametrize("spec, text, message", [
    (options.integer(0), "-1", "must be an integer at least 0, got '-1'"),
    (options.integer(0), ARABIC_3, "must be an integer at least 0"),
    (options.integer(0), "1_000", "must be an integer at least 0"),
    (options.integer(1, 8), "9", "must be an integer from 1 to 8, got '9'"),
    (options.number(above=0), "nan", "must be a finite number greater than 0, got 'nan'"),
    (options.number(above=0), "inf", "must be a finite number greater than 0"),
    (options.number(above=0), "1" + ARABIC_3, "must be a finite number greater than 0"),
    (options.number(0, 64), "65", "must be a finite number at least 0 and at most 64"),
    (options.fraction(), "1", "must be a number in [0, 1), got '1'"),
    (options.fraction(zero=False), "0", "must be a number in (0, 1)"),
    (options.one_of((18, 34), int), "19", "must be one of 18, 34, got '19'"),
    (options.multiple_of(32, 64), "100", "must be an integer multiple of 32, at least 64"),
    (options.palette(), "0,0,0;256,0,0", "must be colours"),
    (options.palette(), f"0,0,0;2{ARABIC_3},0,0", "must be colours"),
    (options.palette(), "0,0,0;-1,0,0", "must be colours"),
    (options.id_map(65535), "65536=0", "must be SRC=ID with SRC 0..65535"),
    (options.split_name(), "../../etc/x", "must be a split name"),
    (options.split_name(), "/abs", "must be a split name"),
    (options.folder_name(), "../x", "must be one folder name"), (options.folder_name(), "..", "must be one folder name"),
    (options.folder_name(), "a\\b", "must be one folder name"), (options.folder_name(), " ", "must be one folder name"),
])
def test_bad_values_say_the_range(spec, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        spec(text)
    assert str(exc.value).startswith(message)


def test_the_config_check_uses_the_same_ranges():
    """A config built in code (run_cekd, tests) is held to the ranges its command line has."""
    with pytest.raises(ConfigError, match=r"^--epochs 0: must be an integer at least 1$"):
        TeacherConfig(epochs=0).check()
    with pytest.raises(ConfigError, match=r"^--lr nan: must be a finite number greater than 0$"):
        TeacherConfig(lr=float("nan")).check()
    with pytest.raises(ConfigError, match=r"^--eval-splits \.\./x: must be a split name"):
        TeacherConfig(eval_splits=("../x",)).check()
    with pytest.raises(ConfigError, match=r"^--run-name /tmp/x: must be one folder name"):
        StudentConfig(run_name="/tmp/x").check()
    with pytest.raises(ConfigError, match=r"^--edge-loss bce: must be one of release, logit$"):
        TeacherConfig(edge_loss="bce").check()
    with pytest.raises(ConfigError, match=r"^--loss-weights: the hint weight is -1.0; weights must be a finite"):
        StudentConfig(loss_weights={"sim": 1, "kdce": 1, "hint": -1, "seg": 1}).check()


# One bad option per command (and per kind of check); each must end in one line, exit code 2.
COMMANDS = [
    ("trainTeacher.py", trainTeacher.cli, ["--workers", "-1"], "--workers: must be an integer at least 0"),
    ("trainTeacher.py", trainTeacher.cli, ["--depth", "19"], "--depth: must be one of 18, 34, 50, 101, 152"),
    ("trainTeacher.py", trainTeacher.cli, ["--edge-loss", "bce"], "--edge-loss: must be one of release, logit"),
    ("trainTeacher.py", trainTeacher.cli, ["--run-name", "../x"], "--run-name: must be one folder name"),
    ("run_demo_student.py", run_demo_student.main, ["--run-name", "a/b"], "--run-name: must be one folder name"),
    ("run_cekd.py", run_cekd.main, ["--run-name", ".."], "--run-name: must be one folder name"),
    ("trainStudent.py", trainStudent.cli, ["--gt-weight", "nan"], "--gt-weight: must be a finite number at least 0"),
    ("trainStudent.py", trainStudent.cli, ["--n-class", "1"], "--n-class: must be an integer from 2 to 256"),
    ("run_demo_teacher.py", run_demo_teacher.main, ["--workers", ARABIC_3], "--workers: must be an integer"),
    ("run_demo_student.py", run_demo_student.main, ["--batch-size", "0"], "--batch-size: must be an integer at least 1"),
    ("run_demo_student.py", run_demo_student.main, ["--thermal-range", "0", "inf"], "--thermal-range: must be a finite"),
    ("run_demo_student.py", run_demo_student.main, ["--splits", "/etc/passwd"], "--splits: must be a split name"),
    ("run_cekd.py", run_cekd.main, ["--frames", "3"], "--frames: must be an integer at least 8"),
    ("run_cekd.py", run_cekd.main, ["--height", "-64"], "--height: must be an integer multiple of 32, at least 64"),
    ("util.convert", convert.main, ["fmb", "a", "b", "--workers", "-1"], "--workers: must be an integer at least 1"),
    ("util.convert", convert.main, ["pst900", "a", "b", "--val-fraction", "1"], "--val-fraction: must be a number in (0, 1)"),
    ("util.convert", convert.main, ["fmb", "a", "b", "--raw-range", "0", "7e5"], "--raw-range: must be a finite number"),
    ("util.convert rosbag", bag_dataset.main, ["b", "d", "--rgb-topic", "/r", "--thermal-topic", "/t", "--max-dt-ms", "-1"],
     "--max-dt-ms: must be a finite number at least 0"),
    ("run_demo_student.py", run_demo_student.main, ["--temporal-smoothing", "1"], "--temporal-smoothing: must be a number in [0, 1)"),
    ("run_demo_student.py", run_demo_student.main, ["--max-frames", "0"], "--max-frames: must be an integer at least 1"),
    ("util.edges", edges.main, ["--data-dir", "x", "--workers", "0"], "--workers: must be an integer at least 1"),
    ("util.edges", edges.main, ["--data-dir", "x", "--radius", "nan"], "--radius: must be a finite number"),
    ("util.check_dataset", check_cmd.main, ["--data-dir", "x", "--n-class", "0"], "--n-class: must be an integer"),
    ("util.synthetic", synthetic.main, ["--out", "x", "--height", "40"], "--height: must be an integer multiple of 32"),
    ("util.synthetic", synthetic.main, ["--out", "x", "--seed", "-1"], "--seed: must be an integer from 0"),
    ("util.convert rosbag", bag_dataset.main, ["b", "d", "--rgb-topic", "/r", "--thermal-topic", "/t", "--raw-range",
                                               "7", "7"], "--raw-range: must be LOW < HIGH, got 7 7"),
    ("util.export", export.main, ["--weights", "w", "--out", "o.onnx", "--thermal-range", "2", "1"],
     "--thermal-range: must be LOW < HIGH, got 2 1"),
    ("util.export", export.main, ["--weights", "w", "--out", "o.onnx", "--calib-frames", "0"],
     "--calib-frames: must be an integer at least 1"),
    ("util.export", export.main, ["--weights", "w", "--out", "o.onnx", "--opset", "9"],
     "--opset: must be an integer from 14 to 20"),
    ("util.export", export.main, ["--weights", "w", "--out", "o.onnx", "--int8-activations", "s8"],
     "--int8-activations: must be one of uint8, int8"),
    ("util.export", export.main, ["--weights", "w", "--out", "o.onnx", "--min-agreement", "0"],
     "--min-agreement: must be a finite number greater than 0 and at most 100"),
    ("run_demo_student.py", run_demo_student.main, ["--backend", "tensorrt"],
     "--backend: must be one of auto, torch, cudagraph, onnxruntime, openvino"),
]


@pytest.mark.parametrize("name, main, argv, message", COMMANDS, ids=[f"{c[0]} {' '.join(c[2][-2:])}" for c in COMMANDS])
def test_every_command_refuses_a_bad_option_in_one_line(tmp_path, monkeypatch, capsys, name, main, argv, message):
    monkeypatch.chdir(tmp_path)  # nothing may appear here
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.startswith(f"error: argument {message}") and len(err.strip().splitlines()) == 1, err
    prog = name if name.endswith(".py") else f"python -m {name}"
    assert f"(see {prog}" in err and err.endswith(" --help)\n")
    assert list(tmp_path.iterdir()) == []


def test_input_options_without_input_are_refused(tmp_path, monkeypatch, capsys):
    """The evaluation on --data-dir would silently drop them (and run fp32 PyTorch): one line instead."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_demo_student.main(["--backend", "openvino", "--temporal-smoothing", "0.5", "--batch-size", "4"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err == (
        "error: --backend, --batch-size, --temporal-smoothing: only with --input (the evaluation on --data-dir "
        "runs the PyTorch model as given) (see run_demo_student.py --help)\n")
    assert list(tmp_path.iterdir()) == []


def test_unlabeled_folders_add_up_over_repeated_options():
    parser = trainStudent.get_args_parser()
    assert parser.parse_args(["--unlabeled", "A", "--unlabeled", "B", "C"]).unlabeled == ["A", "B", "C"]
    assert parser.parse_args([]).unlabeled == []


def test_run_cekd_extra_may_not_set_what_makes_each_training(tmp_path, monkeypatch, capsys):
    """--extra goes to every training; options that make one row what it is would break the comparison."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_cekd.main(["--extra", "--amp", "bf16", "--unlabeled-only", "--no-distill"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "error: --extra --no-distill --unlabeled-only: run_cekd.py sets this for each training itself (the "
        "unlabeled row: --unlabeled-frames N [--unlabeled-per-batch K]); run trainStudent.py for other students\n")
    assert list(tmp_path.iterdir()) == []


def test_one_low_high_rule_for_ranges_given_in_code_and_on_the_command_line():
    """util.data.frames.check_thermal_range (a range given in code) words it as --thermal-range LOW HIGH does."""
    from util.data.frames import check_thermal_range

    assert check_thermal_range((1, 2.5)) == (1.0, 2.5) and check_thermal_range(None) is None
    with pytest.raises(ValueError, match=r"^--thermal-range: must be LOW < HIGH, got 2 1$"):
        check_thermal_range((2, 1))
    with pytest.raises(ValueError, match=r"^--thermal-range: must be LOW < HIGH \(finite numbers\), got 0 inf$"):
        check_thermal_range((0, float("inf")))
    with pytest.raises(argparse.ArgumentTypeError):  # inf never reaches the pair check on the command line
        options.number()("inf")
