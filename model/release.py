"""The released checkpoints (lab-sun/CEKD `final.pth`): key renaming and what their keys tell.

The released files are plain state dicts whose keys follow the release's module names.
Ours differ only where a clearer name was worth it; the rules below are the whole
difference, applied in order, and they are a bijection on the released keys (tested on
every key of the released teacher and student).

| release                              | ours                                  |
|--------------------------------------|---------------------------------------|
| encoder_rgb_conv1...                 | encoder_rgb.conv1...                  |
| encoder_thermal_layer2...            | encoder_thermal.layer2...             |
| ...layer4.net.0.net.{0,1,3,5,7,8}... | ...layer4.blocks.0.{conv_in, bn_in, mhsa, bn_mid, conv_out, bn_out}... |
| ...layer4.net.0.shortcut.0           | ...layer4.blocks.0.shortcut.0         |
| edge.skip2conv / skip2bn / conv1x1   | ed.conv_in / bn_in / conv_out         |
| edge.cdcm..., edge.csam...           | ed.cdcm..., ed.csam...                |
| createMask.expweight.fc1...          | tem.fc1...                            |
| skip_tranform...                     | skip_transform...                     |

A released file carries no configuration, so `infer_config` reads the class count, ResNet
depth and input size off its tensors. Our own checkpoints store their configuration.
Checkpoints written before the BoT blocks got named layers (`...blocks.0.body.3...`) are
renamed by `upgrade_v1_keys`.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Callable, Mapping, Union

import torch

# index in the release's BoT block `net` Sequential -> our BoTBlock attribute
_BOT_BODY = {"0": "conv_in", "1": "bn_in", "3": "mhsa", "5": "bn_mid", "7": "conv_out", "8": "bn_out"}
_BOT_INDEX = {name: index for index, name in _BOT_BODY.items()}
_Repl = Union[str, Callable[[re.Match], str]]

_RELEASE_TO_OURS: tuple[tuple[str, _Repl], ...] = (
    (r"^encoder_(rgb|thermal)_", r"encoder_\1."),
    (r"\.layer4\.net\.(\d+)\.net\.(\d+)\.", lambda m: f".layer4.blocks.{m[1]}.{_BOT_BODY[m[2]]}."),
    (r"\.layer4\.net\.(\d+)\.shortcut\.", r".layer4.blocks.\1.shortcut."),
    (r"^edge\.skip2conv\.", "ed.conv_in."),
    (r"^edge\.skip2bn\.", "ed.bn_in."),
    (r"^edge\.conv1x1\.", "ed.conv_out."),
    (r"^edge\.", "ed."),
    (r"^createMask\.expweight\.", "tem."),
    (r"^skip_tranform\.", "skip_transform."),
)

_OURS_TO_RELEASE: tuple[tuple[str, _Repl], ...] = (
    (r"\.layer4\.blocks\.(\d+)\.(conv_in|bn_in|mhsa|bn_mid|conv_out|bn_out)\.",
     lambda m: f".layer4.net.{m[1]}.net.{_BOT_INDEX[m[2]]}."),
    (r"\.layer4\.blocks\.(\d+)\.shortcut\.", r".layer4.net.\1.shortcut."),
    (r"^ed\.conv_in\.", "edge.skip2conv."),
    (r"^ed\.bn_in\.", "edge.skip2bn."),
    (r"^ed\.conv_out\.", "edge.conv1x1."),
    (r"^ed\.", "edge."),
    (r"^tem\.", "createMask.expweight."),
    (r"^skip_transform\.", "skip_tranform."),
    (r"^encoder_(rgb|thermal)\.", r"encoder_\1_"),  # last: the layer4 rules above need the dot
)

_V1_TO_OURS: tuple[tuple[str, _Repl], ...] = (
    (r"\.layer4\.blocks\.(\d+)\.body\.(\d+)\.", lambda m: f".layer4.blocks.{m[1]}.{_BOT_BODY[m[2]]}."),
)

# layer3 block count -> ResNet depth, for each block type (BasicBlock: 18/34, Bottleneck: 50+)
_DEPTH_BY_LAYER3 = {("basic", 2): 18, ("basic", 6): 34, ("bottleneck", 6): 50,
                    ("bottleneck", 23): 101, ("bottleneck", 36): 152}


def _rename(key: str, rules: tuple[tuple[str, _Repl], ...]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def release_key_to_ours(key: str) -> str:
    return _rename(key, _RELEASE_TO_OURS)


def our_key_to_release(key: str) -> str:
    return _rename(key, _OURS_TO_RELEASE)


def is_release_format(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when the keys follow the release's names (e.g. `encoder_thermal_conv1.weight`)."""
    return any(k.startswith(("encoder_thermal_", "encoder_rgb_")) for k in state_dict)


def from_release(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """A released state dict with our key names (values untouched)."""
    return OrderedDict((release_key_to_ours(k), v) for k, v in state_dict.items())


def to_release(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Our state dict with the release's key names, loadable by the release's own code."""
    return OrderedDict((our_key_to_release(k), v) for k, v in state_dict.items())


def upgrade_v1_keys(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Our first checkpoint format's keys (BoT layers by Sequential index) with today's names."""
    return OrderedDict((_rename(k, _V1_TO_OURS), v) for k, v in state_dict.items())


def network_of(sd: Mapping[str, torch.Tensor]) -> str:
    """'CENet' or 'EKNet', from the keys of a state dict with our names; ValueError otherwise."""
    if any(k.startswith("encoder_rgb.") for k in sd):
        return "CENet"
    if any(k.startswith("tem.") for k in sd):
        return "EKNet"
    raise ValueError("holds neither CENet (teacher) nor EKNet (student) weights")


def infer_config(sd: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """n_class, ResNet depth and input size of the network a state dict (our names) belongs to."""
    try:
        n_class = sd["deconv1.1.bn3.weight"].shape[0]
        kind = "bottleneck" if "encoder_thermal.layer3.0.conv3.weight" in sd else "basic"
        n_blocks = len({k.split(".")[2] for k in sd if k.startswith("encoder_thermal.layer3.")})
        depth = _DEPTH_BY_LAYER3.get((kind, n_blocks))
        if depth is None:
            raise ValueError(f"has an unrecognised ResNet encoder ({kind} blocks, {n_blocks} in layer3)")
        h = sd["encoder_thermal.layer4.blocks.0.mhsa.pos_emb.height"].shape[0] * 16
        w = sd["encoder_thermal.layer4.blocks.0.mhsa.pos_emb.width"].shape[0] * 16
    except KeyError as exc:
        raise ValueError(f"lacks the tensor {exc.args[0]} of a CEKD network") from None
    return {"n_class": int(n_class), "depth": depth, "height": int(h), "width": int(w)}
