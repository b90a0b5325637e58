"""Sarcopenia and myosteatosis cut-offs (kerasmuscle.core.cutoffs): the table, each rule at its edge, missing
inputs left empty with the reason, and ``kerasmuscle predict --cutoffs`` end to end."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from conftest import dicom_case
from kerasmuscle.cli import cli
from kerasmuscle.core.cutoffs import (bmi, builtin, classify, definitions, normalise_sex, read_sex_weight,
                                      read_table)
from kerasmuscle.errors import ReadError


def row(smi=None, hu=None):
    return {"smi_cm2_m2": smi, "muscle_mean_hu": hu}


def test_builtin_definitions_are_the_published_ones():
    assert definitions() == ["martin2013", "prado2008"]
    prado = {(r.klass, r.sex): r.below for r in builtin()["prado2008"]}
    assert prado == {("sarcopenia", "M"): 52.4, ("sarcopenia", "F"): 38.5}
    martin = {(r.klass, r.sex, r.bmi_min, r.bmi_max): r.below for r in builtin()["martin2013"]}
    assert martin == {("sarcopenia", "M", None, 25.0): 43.0, ("sarcopenia", "M", 25.0, None): 53.0,
                      ("sarcopenia", "F", None, None): 41.0, ("myosteatosis", None, None, 25.0): 41.0,
                      ("myosteatosis", None, 25.0, None): 33.0}
    assert all("Lancet Oncol" in r.citation for r in builtin()["prado2008"])
    assert all("J Clin Oncol" in r.citation for r in builtin()["martin2013"])


@pytest.mark.parametrize("sex, smi, expected", [("M", 52.39, True), ("M", 52.4, False), ("F", 38.49, True),
                                                ("F", 38.5, False)])
def test_prado_at_its_thresholds(sex, smi, expected):
    out = classify("prado2008", row(smi, 40.0), sex=sex, bmi=None)
    assert out["sarcopenia"] is expected
    assert out["sarcopenia_rule"].startswith("SMI < ") and "prado2008" in out["sarcopenia_rule"]
    # Prado 2008 gives no myosteatosis cut-off: empty, with the reason
    assert out["myosteatosis"] is None and "defines no myosteatosis" in out["myosteatosis_rule"]


@pytest.mark.parametrize("sex, body_mass_index, smi, expected, band", [
    ("M", 24.9, 42.9, True, "BMI < 25"), ("M", 24.9, 43.0, False, "BMI < 25"),
    ("M", 25.0, 52.9, True, "BMI >= 25"), ("M", 30.0, 53.0, False, "BMI >= 25"),
    ("F", 22.0, 40.9, True, "women"), ("F", 35.0, 41.0, False, "women")])
def test_martin_sarcopenia_by_sex_and_bmi(sex, body_mass_index, smi, expected, band):
    out = classify("martin2013", row(smi, 40.0), sex=sex, bmi=body_mass_index)
    assert out["sarcopenia"] is expected and band in out["sarcopenia_rule"]


@pytest.mark.parametrize("body_mass_index, hu, expected", [(24.0, 40.9, True), (24.0, 41.0, False),
                                                           (26.0, 32.9, True), (26.0, 33.0, False)])
def test_martin_myosteatosis_by_bmi(body_mass_index, hu, expected):
    assert classify("martin2013", row(50.0, hu), sex=None, bmi=body_mass_index)["myosteatosis"] is expected


def test_missing_inputs_leave_the_class_empty_with_the_reason():
    no_sex = classify("prado2008", row(40.0, 40.0), sex=None, bmi=None)
    assert no_sex["sarcopenia"] is None and "sex unknown" in no_sex["sarcopenia_rule"]
    no_height = classify("prado2008", row(None, 40.0), sex="M", bmi=None)
    assert no_height["sarcopenia"] is None and "no height" in no_height["sarcopenia_rule"]
    no_bmi = classify("martin2013", row(40.0, 30.0), sex="M", bmi=None)
    assert no_bmi["sarcopenia"] is None and "BMI unknown" in no_bmi["sarcopenia_rule"]
    assert no_bmi["myosteatosis"] is None and "BMI unknown" in no_bmi["myosteatosis_rule"]
    # women's sarcopenia in Martin 2013 needs no BMI
    assert classify("martin2013", row(40.0, 30.0), sex="F", bmi=None)["sarcopenia"] is True
    with pytest.raises(KeyError, match="unknown cut-off definition 'nope'"):
        classify("nope", row(40.0, 30.0), sex="M", bmi=20.0)


def test_sex_and_bmi_helpers():
    assert [normalise_sex(v) for v in ("M", "f", " Female ", "O", "", None)] == ["M", "F", "F", None, None, None]
    assert bmi(70.0, 1.75) == pytest.approx(22.857, abs=1e-3)
    assert bmi(None, 1.75) is None and bmi(70.0, None) is None


def test_a_new_definition_is_table_rows(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("definition,class,measure,sex,bmi_min,bmi_max,below,unit,citation\n"
                    "mine,sarcopenia,smi_cm2_m2,,,,45,cm²/m²,Someone 2030\n", encoding="utf-8")
    table = read_table(path)
    assert classify("mine", row(44.0), sex=None, bmi=None, table=table)["sarcopenia"] is True


@pytest.mark.parametrize("body, cause", [
    ("mine,frailty,smi_cm2_m2,M,,,45,u,c\n", "line 2: class 'frailty'"),
    ("mine,sarcopenia,grip,M,,,45,u,c\n", "line 2: measure 'grip'"),
    ("mine,sarcopenia,smi_cm2_m2,X,,,45,u,c\n", "line 2: sex 'X'"),
    ("mine,sarcopenia,smi_cm2_m2,M,,,,u,c\n", "line 2: column below is empty"),
    ("mine,sarcopenia,smi_cm2_m2,M,,,4x,u,c\n", "line 2: column below: '4x' is not a number"),
    ("mine,sarcopenia,smi_cm2_m2,M,,,45,u,c\nmine,sarcopenia,smi_cm2_m2,,,,40,u,c\n", "both apply to one patient"),
])
def test_a_malformed_table_is_refused_naming_file_and_line(tmp_path, body, cause):
    path = tmp_path / "bad.csv"
    path.write_text("definition,class,measure,sex,bmi_min,bmi_max,below,unit,citation\n" + body, encoding="utf-8")
    with pytest.raises(ReadError) as info:
        read_table(path)
    assert cause in str(info.value) and "bad.csv" in str(info.value)


def test_sex_and_weight_columns_of_the_heights_table(tmp_path):
    path = tmp_path / "heights.csv"
    path.write_text("case_id,height_m,sex,weight_kg\na,1.80,male,90\nb,1.60,F,\nc,1.70,,\n")
    assert read_sex_weight(path) == {"a": {"sex": "M", "weight_kg": 90.0}, "b": {"sex": "F", "weight_kg": None},
                                     "c": {"sex": None, "weight_kg": None}}
    path.write_text("case_id,height_m,sex\na,1.80,robot\n")
    with pytest.raises(ReadError, match="line 2: column sex: 'robot'"):
        read_sex_weight(path)
    path.write_text("case_id,height_m,weight_kg\na,1.80,-3\n")
    with pytest.raises(ReadError, match="line 2: column weight_kg"):
        read_sex_weight(path)


def test_predict_with_cutoffs_writes_classes_with_their_rules(tiny_bundle, small_cohort, tmp_path):
    scan = dicom_case(small_cohort, 0)
    heights = tmp_path / "heights.csv"
    heights.write_text("case_id,height_m,sex,weight_kg\ncase_0000,1.80,M,100\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(scan), "--model", str(tiny_bundle), "--out", str(out),
                                      "--heights", str(heights), "--cutoffs", "martin2013", "--format", "csv"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "case_0000" / "measurements.json").read_text())
    cut = record["cutoffs"]
    assert cut["cutoffs"] == "martin2013" and cut["sex"] == "M" and cut["sources"] == {"sex": "csv", "weight": "csv"}
    assert cut["bmi"] == pytest.approx(100 / 1.8 ** 2, abs=1e-3)
    smi = record["measurements"]["smi_cm2_m2"]
    assert cut["sarcopenia"] is (smi < 53) and "BMI >= 25" in cut["sarcopenia_rule"]
    assert cut["myosteatosis"] is (record["measurements"]["muscle_mean_hu"] < 33)
    with open(out / "measurements.csv", newline="", encoding="utf-8") as fh:
        line = next(csv.DictReader(fh))
    assert line["cutoffs"] == "martin2013" and line["sarcopenia_rule"] == cut["sarcopenia_rule"]
    assert line["sarcopenia"] == str(cut["sarcopenia"])
    # a rerun with another definition is another result: refused until --overwrite
    again = CliRunner().invoke(cli, ["predict", str(scan), "--model", str(tiny_bundle), "--out", str(out),
                                     "--heights", str(heights), "--cutoffs", "prado2008", "--format", "csv"])
    assert again.exit_code == 1 and "cut-offs martin2013" in again.output and "cut-offs prado2008" in again.output


def test_an_unknown_definition_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["predict", str(tmp_path), "--out", str(tmp_path / "o"), "--cutoffs", "x"])
    assert result.exit_code == 2 and "martin2013" in result.output and "Traceback" not in result.output
