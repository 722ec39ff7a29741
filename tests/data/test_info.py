"""DatasetInfo: validation (one clear line naming the field), JSON round trip, dataset.json loading, MFNet default."""
import json

import pytest

from util.data import mfnet
from util.data.info import FMB, MFNET, PST900, DatasetInfo, default_palette, load_dataset_info, write_dataset_info
from util.data.layout import DatasetError

NAMES = ("background", "hot", "cold")
PALETTE = ((0, 0, 0), (255, 0, 0), (0, 0, 255))


def make(**overrides):
    fields = dict(name="toy", class_names=NAMES, palette=PALETTE)
    fields.update(overrides)
    return DatasetInfo(**fields)


def test_valid_info_and_lists_become_tuples():
    info = make(class_names=list(NAMES), palette=[list(c) for c in PALETTE], ignore_index=0,
                thermal_range=[100, 200])
    assert info.n_class == 3
    assert info.class_names == NAMES and info.palette == PALETTE
    assert info.ignore_index == 0 and info.thermal_range == (100, 200)
    assert info == make(ignore_index=0, thermal_range=(100, 200))


@pytest.mark.parametrize("overrides, fragment", [
    (dict(name=""), "name:"),
    (dict(class_names=("a",), palette=((0, 0, 0),)), "class_names: expected 2.."),
    (dict(class_names="abc"), "class_names: expected a list"),
    (dict(class_names=("a", "", "c")), "class_names[1]: expected a non-empty name"),
    (dict(class_names=("a", "b", "a")), "class_names[2]: name 'a' appears more than once"),
    (dict(palette=PALETTE[:2]), "palette: expected 3 colours (one per class), got 2"),
    (dict(palette=((0, 0, 0), (256, 0, 0), (0, 0, 1))), "palette[1]: expected 3 integers 0..255"),
    (dict(palette=((0, 0, 0), (1, 2), (0, 0, 1))), "palette[1]: expected 3 integers"),
    (dict(palette=((0, 0, 0), (1, 2, 3.5), (0, 0, 1))), "palette[1]"),
    (dict(palette=((0, 0, 0), (True, 0, 0), (0, 0, 1))), "palette[1]"),
    (dict(ignore_index=3), "ignore_index: expected null or a class id 0..2"),
    (dict(ignore_index=255), "ignore_index"),
    (dict(ignore_index=-1), "ignore_index"),
    (dict(ignore_index=True), "ignore_index"),
    (dict(thermal_range=(200, 100)), "thermal_range: expected null or [LOW, HIGH]"),
    (dict(thermal_range=(0, 70000)), "thermal_range"),
])
def test_invalid_fields_name_the_field(overrides, fragment):
    with pytest.raises(ValueError) as exc:
        make(**overrides)
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_json_round_trip():
    info = make(ignore_index=2, thermal_range=(7000, 9000))
    text = info.to_json()
    assert DatasetInfo.from_json(text) == info
    data = json.loads(text)
    assert data == {"name": "toy", "class_names": list(NAMES), "palette": [list(c) for c in PALETTE],
                    "ignore_index": 2, "thermal_range": [7000, 9000]}
    # One field per line: the palette stays readable.
    assert len(text.strip().splitlines()) == 7


@pytest.mark.parametrize("text, fragment", [
    ("{", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"name": "x", "class_names": ["a", "b"]}', "palette: required field missing"),
    ('{"name": "x", "class_names": ["a", "b"], "palette": [[0,0,0],[1,1,1]], "colours": 1}',
     "colours: unknown field"),
])
def test_from_json_errors(text, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[")):
        DatasetInfo.from_json(text)


def test_no_file_means_mfnet(tmp_path):
    assert load_dataset_info(tmp_path) is MFNET
    assert MFNET.name == "MFNet" and MFNET.ignore_index is None and MFNET.thermal_range is None
    assert MFNET.class_names == mfnet.CLASS_NAMES and MFNET.palette == mfnet.PALETTE
    assert MFNET.n_class == mfnet.N_CLASS


def test_write_and_load(tmp_path):
    info = make(ignore_index=0)
    path = write_dataset_info(info, tmp_path)
    assert path == tmp_path / "dataset.json"
    assert load_dataset_info(tmp_path) == info


def test_bad_file_names_file_and_field(tmp_path):
    data = make().to_dict()
    data["palette"][2] = [0, 0]
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError) as exc:
        load_dataset_info(tmp_path)
    message = str(exc.value)
    assert message.startswith(str(tmp_path / "dataset.json") + ": palette[2]:")
    assert "\n" not in message


def test_known_datasets_are_consistent():
    assert PST900.n_class == 5 and PST900.ignore_index is None
    assert FMB.n_class == 15 and FMB.ignore_index == 0 and FMB.class_names[0] == "unlabeled"
    assert len(set(FMB.palette)) == 15 and len(set(PST900.palette)) == 5


def test_default_palette_is_voc_and_distinct():
    palette = default_palette(256)
    assert palette[:4] == ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0))
    assert len(set(palette)) == 256
    assert default_palette(5) == palette[:5]
