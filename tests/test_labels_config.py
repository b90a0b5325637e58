"""The label table and the JSON round trip of configs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasmuscle.config import ConfigError, SynthConfig
from kerasmuscle.labels import LABELS, MUSCLE_IDS, NUM_CLASSES, colour_table, label


def test_label_table_matches_the_paper():
    assert [lab.id for lab in LABELS] == [0, 1, 2, 3, 4, 5]
    assert NUM_CLASSES == 6 and MUSCLE_IDS == (1, 2, 3, 4, 5)
    colours = {lab.key: lab.colour_name for lab in LABELS}
    # Kreher et al. 2022, Figure 1.
    assert colours == {"background": "none", "rectus": "blue", "abdominal_wall": "green", "psoas": "yellow",
                       "quadratus": "red", "erector_spinae": "magenta"}
    assert [lab.short for lab in LABELS[1:]] == ["Rectus", "Abdominal wall", "Psoas", "Quadratus", "Erector spinae"]
    assert len({lab.colour for lab in LABELS}) == 6


def test_colours_look_like_their_names():
    table = colour_table()
    r, g, b = (table[label(k).id].astype(int) for k in ("rectus", "abdominal_wall", "quadratus"))
    assert r[2] > r[0] and r[2] > r[1]  # blue
    assert g[1] > g[0] and g[1] > g[2]  # green
    assert b[0] > b[1] and b[0] > b[2]  # red
    y, m = table[3].astype(int), table[5].astype(int)
    assert y[0] > 200 and y[1] > 200 and y[2] < 80  # yellow
    assert m[0] > 200 and m[2] > 200 and m[1] < 80  # magenta
    assert table.shape == (256, 3) and not table[6:].any()


@pytest.mark.parametrize("query,expected", [(3, "psoas"), ("psoas", "psoas"), ("Psoas Major", "psoas"),
                                            ("erector spinae", "erector_spinae"), (np.uint8(1), "rectus")])
def test_label_lookup(query, expected):
    assert label(query).key == expected


def test_unknown_label_lists_the_valid_ones():
    with pytest.raises(KeyError, match="rectus, abdominal_wall"):
        label("iliacus")


def test_synth_config_round_trips_through_json(tmp_path):
    config = SynthConfig(image_size=256, fov_mm=(350.0, 450.0), contrast_phases=("native",), noise_hu=(8.0, 9.0))
    assert SynthConfig.from_json(config.to_json()) == config
    config.save(tmp_path / "synth.json")
    assert SynthConfig.load(tmp_path / "synth.json") == config
    data = json.loads((tmp_path / "synth.json").read_text())
    assert data["fov_mm"] == [350.0, 450.0]  # tuples become JSON lists
    assert SynthConfig.from_dict({}) == SynthConfig()  # defaults fill in


@pytest.mark.parametrize("data,message", [
    ({"imagesize": 256}, "unknown field(s) imagesize"),
    ({"image_size": "big"}, "SynthConfig.image_size: expected an integer"),
    ({"fov_mm": [400.0]}, "SynthConfig.fov_mm: expected 2 values"),
    ({"fov_mm": [500.0, 300.0]}, "fov_mm must be an interval"),
    ({"image_size": 100}, "image_size must be a multiple of 16"),
    ({"contrast_phases": ["delayed"]}, "contrast_phases must be a non-empty subset"),
    ({"follow_up_fraction": 1.5}, "follow_up_fraction must be within [0, 1]"),
    ({"slice_spacing_mm": True}, "expected a number"),
])
def test_bad_config_values_name_the_field(data, message):
    with pytest.raises(ConfigError) as info:
        SynthConfig.from_dict(data)
    assert message in str(info.value)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        SynthConfig().image_size = 128  # type: ignore[misc]
    assert SynthConfig().replace(image_size=128).image_size == 128


def test_load_reports_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: SynthConfig: not valid JSON"):
        SynthConfig.load(tmp_path / "bad.json")
