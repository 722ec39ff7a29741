"""util/engine/resume.py and the class count resolved with the config (cli.resolve, cli.load_config)."""
import json

import pytest

import trainStudent
import trainTeacher
from util.data.info import DatasetInfo, write_dataset_info
from util.engine import Session, StudentConfig, TeacherConfig, resolve, training_data
from util.engine.cli import load_config
from util.engine.config import ConfigError
from util.engine.folders import CONFIG_FILE
from util.engine.resume import RUNTIME_OPTIONS, holds_nothing, restartable, resume_target, resumed_config, saved_config

THREE = DatasetInfo("toy", ("background", "car", "person"), ((0, 0, 0), (255, 0, 0), (0, 255, 0)))


def test_resume_target_takes_a_folder_or_a_file(tmp_path):
    assert resume_target(tmp_path) == (tmp_path, tmp_path / "last.pth")
    (tmp_path / "epoch7.pth").write_bytes(b"")
    assert resume_target(tmp_path / "epoch7.pth") == (tmp_path, tmp_path / "epoch7.pth")
    with pytest.raises(FileNotFoundError, match=r"--resume .*nope: no such run folder or checkpoint"):
        resume_target(tmp_path / "nope")


def test_resumed_config_lets_runtime_options_change_and_refuses_the_rest():
    saved = TeacherConfig(epochs=4, depth=18, lr=0.01, n_class=9)
    cli = TeacherConfig(epochs=9, depth=18, lr=0.02, workers=0, n_class=9)
    assert "epochs" in RUNTIME_OPTIONS and "lr" not in RUNTIME_OPTIONS
    merged = resumed_config(saved, cli, {"epochs", "workers"})
    assert (merged.epochs, merged.workers, merged.lr) == (9, 0, 0.01)
    with pytest.raises(ConfigError, match=r"cannot change in a run that has started: --lr 0.02 \(the run has 0.01\)"):
        resumed_config(saved, cli, {"epochs", "lr"})
    # an option given with the run's own value is no change
    assert resumed_config(saved, TeacherConfig(epochs=9, depth=18, n_class=9), {"epochs", "depth"}).epochs == 9


def test_saved_config_of_a_run_without_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_text(json.dumps({"network": "CENet", "config": TeacherConfig(depth=34).to_dict()}))
    assert restartable(run)
    assert saved_config(TeacherConfig, run).depth == 34
    with pytest.raises(ValueError, match=r"is a CENet \(teacher\) run folder, but trainStudent.py resumes EKNet"):
        saved_config(StudentConfig, run)
    (run / "notes.txt").write_text("mine")  # a file the trainer did not write: not started again
    assert not restartable(run)


def test_only_a_lock_and_partial_writes_count_as_nothing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert not holds_nothing(run) and not restartable(run)  # an empty folder may be a user's
    (run / "run.lock").write_text("pid 1 on elsewhere\n")
    (run / ".run.json.k3x_9.tmp").write_text('{"network": ')
    assert holds_nothing(run) and restartable(run)
    assert saved_config(TeacherConfig, run) is None  # nothing saved: the options given start it
    (run / ".notes.txt.tmp").mkdir()  # a folder named like a partial write is not one of ours
    assert not holds_nothing(run) and not restartable(run)


def test_the_class_count_is_resolved_with_the_config(tmp_path):
    data = tmp_path / "toy"
    data.mkdir()
    write_dataset_info(THREE, data)
    cfg = load_config(TeacherConfig, trainTeacher.get_args_parser(), ["--data-dir", str(data)])
    assert cfg.n_class == 3  # from dataset.json, before any data is loaded
    assert resolve(StudentConfig(data_dir=str(tmp_path / "absent"))).n_class == 9  # no dataset.json: MFNet's
    given = StudentConfig(data_dir=str(data), n_class=3)
    assert resolve(given) is given
    with pytest.raises(ConfigError, match=r"--n-class 5: the data in .*toy have 3 classes \(toy: background, car, "
                                          r"person\)"):
        load_config(StudentConfig, trainStudent.get_args_parser(), ["--data-dir", str(data), "--n-class", "5"])


def test_training_data_takes_resolved_configs_only(tmp_path):
    with Session("cpu") as session, pytest.raises(TypeError, match="cfg.n_class is not resolved"):
        training_data(TeacherConfig(data_dir=str(tmp_path)), session, edges=False)
