"""Results must not move by accident, and files written by earlier versions keep working.

Two pinned checks, both on ResNet-18 at 64x64 on the synthetic data (seed 3), teacher first, then a
student distilled from it:

- Bitwise: a 2-epoch run gives weights whose sha256 (under the release's key names, which no renaming of
  our modules changes) was recorded by the code before the engine refactor (issue 10). A bitwise result
  holds only where the same floating-point kernels run, so the hash is looked up by machine kind: CPU
  vendor and model name, the instruction-set extensions that oneDNN and ATen dispatch on (AVX-512, VNNI,
  AVX512-BF16, AMX), the torch version and the thread count (reductions split by thread). The coarse
  ``torch.backends.cpu.get_cpu_capability()`` says "AVX512" on both the AMD EPYC and the Sapphire Rapids
  Xeon, whose kernels differ. On a machine kind without a record this check does not apply.
- Everywhere: one training step changes each tensor by what the recorded step did, per tensor sum and
  absolute sum within 1% of the recorded absolute sum. One step cannot amplify rounding: changing only
  the kernels here (oneDNN off, or 1 thread instead of 2, on the AMD EPYC) moved no tensor's step by more
  than 0.41% (the TEM's, whose input is an exponential), the others by less than 1e-4. A change of the
  losses, their weights, the optimiser or the data order moves whole steps by far more than 1%.

Why not compare the 2-epoch weights with a tolerance: 16 SGD steps amplify rounding chaotically. With the
kernels changed as above, about half of the tensors' sums moved by more than the 1e-3 that an earlier
version of this test allowed (the TEM's batch-norm biases by several times their absolute sum), and on the
Xeon the first convolution's sum moved from -4.4978 to -4.4685. No bound that such drift keeps is tight
enough to catch a real change.
"""
import hashlib
import json
import platform
import re
import shutil
from pathlib import Path
from typing import Optional

import pytest
import torch

import trainStudent
import trainTeacher
from conftest import FIXTURES
from model import CENet, EKNet
from model.release import to_release
from util.data.synthetic import generate_dataset
from util.deploy.cpu import cpuinfo_fields
from util.engine import seed_everything
from util.engine.checkpoint import build_from_weights, save_atomic

PINNED = json.loads((FIXTURES / "pinned_weights.json").read_text())
SMALL = ["--depth", "18", "--height", "64", "--width", "64", "--batch-size", "2", "--no-pretrained",
         "--workers", "0", "--no-progress", "--lr", "0.01", "--eval-splits"]
KERNEL_ISA = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
STEP_TOLERANCE = 0.01  # of each tensor's recorded absolute change; see the module docstring


def machine_kind(cpuinfo: Optional[str] = None) -> dict:
    """What decides which CPU kernels run, as the records in pinned_weights.json name it."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    fields = cpuinfo_fields(cpuinfo)
    flags = set(fields.get("flags", "").split())
    return {"vendor": fields.get("vendor_id", platform.machine()), "model_name": fields.get("model name", ""),
            "isa": sorted(flags & set(KERNEL_ISA)), "torch": torch.__version__, "threads": torch.get_num_threads()}


def recorded_hashes(kind: dict, machines: list) -> Optional[dict]:
    """The record of this machine kind; a record's model_name of None matches any model of that vendor."""
    for record in machines:
        if all(record[k] == kind[k] for k in ("vendor", "isa", "torch", "threads")) and \
                record["model_name"] in (None, kind["model_name"]):
            return record
    return None


def _release_state(run_dir):
    return to_release(torch.load(run_dir / "last.pth", weights_only=True)["model"])


def _sha(sd):
    m = hashlib.sha256()
    for k in sorted(sd):
        m.update(k.encode())
        m.update(sd[k].contiguous().numpy().tobytes())
    return m.hexdigest()


def _train_pair(root, data, *extra):
    common = ["--data-dir", str(data), "--runs-dir", str(root), *SMALL, *extra]
    torch.manual_seed(0)
    trainTeacher.cli(["--run-name", "t", *common])
    torch.manual_seed(0)
    trainStudent.cli(["--run-name", "s", "--teacher", str(root / "t" / "best.pth"), *common])
    return root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("pinned") / "syn", n_frames=16, height=64, width=64, seed=3)


@pytest.fixture(scope="module")
def pinned_runs(tmp_path_factory, synthetic):
    return _train_pair(tmp_path_factory.mktemp("runs"), synthetic, "--epochs", "2")


@pytest.fixture(scope="module")
def one_step_runs(tmp_path_factory, synthetic):
    return _train_pair(tmp_path_factory.mktemp("one_step"), synthetic, "--epochs", "1", "--max-steps-per-epoch", "1")


def test_the_machine_kind_is_read_from_cpuinfo():
    epyc = "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
    kind = machine_kind(epyc * 2)
    assert (kind["vendor"], kind["model_name"], kind["isa"]) == ("AuthenticAMD", "AMD EPYC",
                                                                 ["avx512_bf16", "avx512_vnni", "avx512f"])
    machines = PINNED["machines"]
    assert recorded_hashes({**kind, "torch": "2.14.1+cu130", "threads": 2}, machines) is machines[0]
    assert recorded_hashes({**kind, "torch": "2.14.1+cu130", "threads": 1}, machines) is None
    xeon = epyc.replace("AuthenticAMD", "GenuineIntel").replace("AMD EPYC", "Intel Xeon").replace(
        "avx512_vnni", "avx512_vnni amx_bf16 amx_int8 amx_tile")
    assert recorded_hashes({**machine_kind(xeon), "torch": "2.14.1+cu130", "threads": 2}, machines) is machines[1]
    # same vendor and capability string, but no AMX: not the Xeon's kernels
    assert recorded_hashes({**machine_kind(xeon.replace(" amx_int8", "")), "torch": "2.14.1+cu130", "threads": 2},
                           machines) is None


# The records hold for the thread count they name: make test runs this test after its parallel part, alone,
# on every thread; it trains only where a record applies.
@pytest.mark.serial
@pytest.mark.parametrize("network,run", [("teacher", "t"), ("student", "s")])
def test_a_fixed_seed_run_gives_the_pinned_weights(request, network, run):
    kind = machine_kind()
    record = recorded_hashes(kind, PINNED["machines"])
    if record is None:
        pytest.skip(f"no bitwise record for this machine kind {kind}; the one-step check applies")
    pinned_runs = request.getfixturevalue("pinned_runs")
    assert _sha(_release_state(pinned_runs / run)) == record[network], f"machine kind {kind}"


@pytest.mark.parametrize("network,cls,run", [("teacher", CENet, "t"), ("student", EKNet, "s")])
def test_one_training_step_moves_each_tensor_as_recorded(one_step_runs, network, cls, run):
    seed_everything(0)  # the trainers build the network right after seeding
    before = to_release(cls(9, 18, 64, 64, False).state_dict())
    after = _release_state(one_step_runs / run)
    recorded = PINNED["one_step"][network]
    assert set(recorded) == {k for k, v in after.items() if v.is_floating_point()}
    for k, (total, absolute) in recorded.items():
        step = after[k].double() - before[k].double()
        bound = STEP_TOLERANCE * absolute + 1e-12
        assert abs(float(step.sum()) - total) <= bound, (k, float(step.sum()), total)
        assert abs(float(step.abs().sum()) - absolute) <= bound, (k, float(step.abs().sum()), absolute)


def _as_first_format(ckpt: dict) -> dict:
    """A checkpoint as our first version wrote it: BoT layers by Sequential index, argparse options."""
    index = {"conv_in": 0, "bn_in": 1, "mhsa": 3, "bn_mid": 5, "conv_out": 7, "bn_out": 8}
    pattern = re.compile(r"\.layer4\.blocks\.(\d+)\.(conv_in|bn_in|mhsa|bn_mid|conv_out|bn_out)\.")
    old = {k: v for k, v in ckpt.items() if k not in ("version", "extra")}
    old["model"] = {pattern.sub(lambda m: f".layer4.blocks.{m[1]}.body.{index[m[2]]}.", k): v
                    for k, v in ckpt["model"].items()}
    args = dict(ckpt["args"])
    for new, flag in (("pretrained", "no_pretrained"), ("augment", "no_augment"), ("progress", "no_progress"),
                      ("distill", "no_distill")):
        args[flag] = not args.pop(new)
    args["loss_weights"] = list(args["loss_weights"].values())
    args["eval_splits"] = list(args["eval_splits"])
    old["args"] = args
    return old


def test_checkpoints_of_the_first_format_load_and_resume(pinned_runs, tmp_path, capsys):
    run = tmp_path / "old"
    shutil.copytree(pinned_runs / "s", run)
    current = torch.load(run / "last.pth", weights_only=True)
    save_atomic(_as_first_format(current), run / "last.pth")
    best = torch.load(run / "best.pth", weights_only=True)
    save_atomic(_as_first_format({**best, "args": current["args"]}), run / "best.pth")
    assert any(".body.3." in k for k in torch.load(run / "last.pth", weights_only=True)["model"])

    built = build_from_weights(run / "best.pth", expect="EKNet").model
    assert all(torch.equal(v, best["model"][k]) for k, v in built.state_dict().items())
    results = trainStudent.cli(["--resume", str(run), "--epochs", "3", "--workers", "0"])
    out = capsys.readouterr().out
    assert "with its saved options" in out and "--epochs=3" in out
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 3
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3]
