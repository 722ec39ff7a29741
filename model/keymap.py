"""Key renaming between the released checkpoints and our modules.

The released `final.pth` files are plain state dicts whose keys follow the release's
module names. Ours differ only where a clearer name was worth it; this table is the
whole difference, applied in order, and it is a bijection on the released keys
(tested on every key of ../shared/reference/official_state_dict.json).

| release                         | ours                        |
|---------------------------------|-----------------------------|
| encoder_rgb_conv1...            | encoder_rgb.conv1...        |
| encoder_thermal_layer2...       | encoder_thermal.layer2...   |
| ...layer4.net.0.net.3.to_qkv    | ...layer4.blocks.0.body.3.to_qkv |
| ...layer4.net.0.shortcut.0      | ...layer4.blocks.0.shortcut.0 |
| edge.skip2conv / skip2bn / conv1x1 | ed.conv_in / bn_in / conv_out |
| edge.cdcm..., edge.csam...      | ed.cdcm..., ed.csam...      |
| createMask.expweight.fc1...     | tem.fc1...                  |
| skip_tranform...                | skip_transform...           |
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping

import torch

_RELEASE_TO_OURS: tuple[tuple[str, str], ...] = (
    (r"^encoder_(rgb|thermal)_", r"encoder_\1."),
    (r"\.layer4\.net\.(\d+)\.net\.", r".layer4.blocks.\1.body."),
    (r"\.layer4\.net\.(\d+)\.shortcut\.", r".layer4.blocks.\1.shortcut."),
    (r"^edge\.skip2conv\.", "ed.conv_in."),
    (r"^edge\.skip2bn\.", "ed.bn_in."),
    (r"^edge\.conv1x1\.", "ed.conv_out."),
    (r"^edge\.", "ed."),
    (r"^createMask\.expweight\.", "tem."),
    (r"^skip_tranform\.", "skip_transform."),
)

_OURS_TO_RELEASE: tuple[tuple[str, str], ...] = (
    (r"\.layer4\.blocks\.(\d+)\.body\.", r".layer4.net.\1.net."),
    (r"\.layer4\.blocks\.(\d+)\.shortcut\.", r".layer4.net.\1.shortcut."),
    (r"^ed\.conv_in\.", "edge.skip2conv."),
    (r"^ed\.bn_in\.", "edge.skip2bn."),
    (r"^ed\.conv_out\.", "edge.conv1x1."),
    (r"^ed\.", "edge."),
    (r"^tem\.", "createMask.expweight."),
    (r"^skip_transform\.", "skip_tranform."),
    (r"^encoder_(rgb|thermal)\.", r"encoder_\1_"),  # last: the layer4 rules above need the dot
)


def _rename(key: str, rules: tuple[tuple[str, str], ...]) -> str:
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
