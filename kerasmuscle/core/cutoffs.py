"""Published cut-offs for sarcopenia (by the skeletal muscle index) and myosteatosis (by muscle attenuation).

The definitions are data, not code: ``cutoffs.csv`` beside this module holds one row per definition,
class, sex and BMI band (the measure, the threshold a value must lie *below* to be in the class, its unit
and the citation), so a new definition is a few table rows. :func:`classify` applies one definition, by
name, to a case's SMI and mean muscle HU with the patient's sex and BMI. An input the definition needs
that is missing (the sex, the BMI, the height for the SMI) leaves that class empty (``None``) with the
reason; nothing is guessed. Every result names the rule it used.

Built in:

- ``prado2008``: sarcopenia by SMI, men < 52.4, women < 38.5 cm²/m² (Prado et al., Lancet Oncol 2008).
- ``martin2013``: sarcopenia by SMI, men < 43 at BMI < 25 and < 53 at BMI >= 25, women < 41 cm²/m²;
  myosteatosis by mean muscle HU, < 41 HU at BMI < 25 and < 33 HU at BMI >= 25 (Martin et al., J Clin
  Oncol 2013).

numpy-free and TensorFlow-free: the light predictor uses it.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from kerasmuscle.errors import ReadError

#: The table of built-in definitions.
TABLE = Path(__file__).with_name("cutoffs.csv")
#: The classes a definition may give, in output order.
CLASSES = ("sarcopenia", "myosteatosis")
#: The case measurement each rule reads (a key of :data:`kerasmuscle.core.measure.CASE_COLUMNS`) and its name.
MEASURES = {"smi_cm2_m2": "SMI", "muscle_mean_hu": "muscle HU"}
_COLUMNS = ("definition", "class", "measure", "sex", "bmi_min", "bmi_max", "below", "unit", "citation")
_SEX_WORDS = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}


@dataclass(frozen=True)
class Rule:
    """One row of the table: values of ``measure`` below ``below`` are in ``klass``, for ``sex`` (None: any)
    with a BMI in ``[bmi_min, bmi_max)`` (None: open)."""

    definition: str
    klass: str
    measure: str
    sex: str | None
    bmi_min: float | None
    bmi_max: float | None
    below: float
    unit: str
    citation: str

    @property
    def needs_bmi(self) -> bool:
        return self.bmi_min is not None or self.bmi_max is not None

    def applies(self, sex: str | None, bmi: float | None) -> bool:
        if self.sex is not None and sex != self.sex:
            return False
        if self.needs_bmi:
            if bmi is None:
                return False
            if self.bmi_min is not None and bmi < self.bmi_min:
                return False
            if self.bmi_max is not None and bmi >= self.bmi_max:
                return False
        return True

    def text(self) -> str:
        """``SMI < 43 cm²/m² (men, BMI < 25; martin2013)``."""
        who = [] if self.sex is None else ["men" if self.sex == "M" else "women"]
        if self.bmi_min is not None and self.bmi_max is not None:
            who.append(f"BMI {self.bmi_min:g}-{self.bmi_max:g}")
        elif self.bmi_min is not None:
            who.append(f"BMI >= {self.bmi_min:g}")
        elif self.bmi_max is not None:
            who.append(f"BMI < {self.bmi_max:g}")
        return f"{MEASURES[self.measure]} < {self.below:g} {self.unit} ({', '.join([*who, self.definition])})"


def _number(path: Path, line: int, column: str, text: str) -> float | None:
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise ReadError(path, f"line {line}: column {column}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ReadError(path, f"line {line}: column {column}: {text!r} is not a finite number")
    return value


def _csv_rows(path: Path, what: str) -> list[list[str]]:
    """Every row of a CSV file (UTF-8, a BOM allowed), or a ReadError naming the file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReadError(path, f"cannot read the {what}: {exc}") from exc


def read_table(path: str | os.PathLike = TABLE) -> dict[str, list[Rule]]:
    """Read a cut-off table (the columns of ``cutoffs.csv``): definition name -> its rules.

    Raises:
        ReadError: the file cannot be read, a column is missing, or a row is malformed (an unknown class,
            measure or sex, a missing threshold, or two rules of one class that both apply to one patient).
    """
    path = Path(path)
    rows = _csv_rows(path, "cut-off table")
    if not rows:
        raise ReadError(path, "the cut-off table is empty (expected a header line)")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise ReadError(path, f"the cut-off table lacks the column(s) {', '.join(missing)}")
    at = {c: header.index(c) for c in _COLUMNS}
    table: dict[str, list[Rule]] = {}
    for line, cells in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        cell = {c: (cells[i].strip() if i < len(cells) else "") for c, i in at.items()}
        if not cell["definition"]:
            raise ReadError(path, f"line {line}: column definition is empty")
        if cell["class"] not in CLASSES:
            raise ReadError(path, f"line {line}: class {cell['class']!r} is not one of {', '.join(CLASSES)}")
        if cell["measure"] not in MEASURES:
            raise ReadError(path, f"line {line}: measure {cell['measure']!r} is not one of {', '.join(MEASURES)}")
        sex = cell["sex"].upper() or None
        if sex not in (None, "M", "F"):
            raise ReadError(path, f"line {line}: sex {cell['sex']!r} is not M, F or empty (any)")
        below = _number(path, line, "below", cell["below"])
        if below is None:
            raise ReadError(path, f"line {line}: column below is empty")
        table.setdefault(cell["definition"], []).append(Rule(
            cell["definition"], cell["class"], cell["measure"], sex, _number(path, line, "bmi_min", cell["bmi_min"]),
            _number(path, line, "bmi_max", cell["bmi_max"]), below, cell["unit"], cell["citation"]))
    for name, rules in table.items():
        for klass in CLASSES:
            _check_disjoint(path, name, [r for r in rules if r.klass == klass])
    return table


def _check_disjoint(path: Path, name: str, rules: list[Rule]) -> None:
    """Two rules of one class must never both apply (probed at each sex and at BMI band edges)."""
    edges = sorted({v for r in rules for v in (r.bmi_min, r.bmi_max) if v is not None})
    probes = [None, *(e + d for e in edges for d in (-1e-6, 0.0))] or [None]
    for sex in ("M", "F"):
        for bmi in probes:
            hit = [r for r in rules if r.applies(sex, bmi)]
            if len(hit) > 1:
                raise ReadError(path, f"{name}: rules {hit[0].text()} and {hit[1].text()} both apply to one patient")


@lru_cache(maxsize=1)
def builtin() -> dict[str, list[Rule]]:
    """The built-in definitions (``cutoffs.csv``)."""
    return read_table(TABLE)


def definitions() -> list[str]:
    """Names of the built-in definitions."""
    return sorted(builtin())


def normalise_sex(value: Any) -> str | None:
    """``M``, ``F`` or None (unknown, other, empty) from DICOM PatientSex or a table cell."""
    if value is None:
        return None
    return _SEX_WORDS.get(str(value).strip().lower())


def bmi(weight_kg: float | None, height_m: float | None) -> float | None:
    """Body mass index (kg/m²), None when the weight or the height is unknown."""
    if weight_kg is None or height_m is None or height_m <= 0 or weight_kg <= 0:
        return None
    return float(weight_kg) / float(height_m) ** 2


def classify(name: str, case_row: Mapping[str, Any], *, sex: str | None, bmi: float | None,
             sources: Mapping[str, str] | None = None,
             table: Mapping[str, list[Rule]] | None = None) -> dict[str, Any]:
    """Apply the definition ``name`` to one case's measurements.

    Args:
        name: a definition in ``table`` (default: the built-in ones).
        case_row: the case measurements (``smi_cm2_m2``, ``muscle_mean_hu``).
        sex: ``M``, ``F`` or None (unknown).
        bmi: kg/m², or None (unknown).
        sources: where the sex and the BMI came from (``{"sex": "dicom", "bmi": "csv"}``), recorded.

    Returns:
        ``{"cutoffs", "citation", "sex", "bmi", "sources", <class>, <class>_rule, ...}`` for every class in
        :data:`CLASSES`: the class is True or False with the rule that decided it, or None with the reason
        (an input missing, or the definition not giving that class).

    Raises:
        KeyError: ``name`` is not a definition of the table.
    """
    table = builtin() if table is None else table
    if name not in table:
        raise KeyError(f"unknown cut-off definition {name!r}: known are {', '.join(sorted(table))}")
    rules = table[name]
    out: dict[str, Any] = {"cutoffs": name, "citation": "; ".join(dict.fromkeys(r.citation for r in rules)),
                           "sex": sex, "bmi": bmi, "sources": dict(sources or {})}
    for klass in CLASSES:
        mine = [r for r in rules if r.klass == klass]
        value_class, rule = _one_class(name, klass, mine, case_row, sex, bmi)
        out[klass], out[f"{klass}_rule"] = value_class, rule
    return out


def _one_class(name: str, klass: str, rules: list[Rule], case_row: Mapping[str, Any], sex: str | None,
               bmi: float | None) -> tuple[bool | None, str]:
    if not rules:
        return None, f"{name} defines no {klass} cut-off"
    measure = rules[0].measure
    value = case_row.get(measure)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        why = "no height, so no SMI" if measure == "smi_cm2_m2" else "no muscle measured"
        return None, f"{MEASURES[measure]} unknown ({why})"
    if any(r.sex is not None for r in rules) and sex is None:
        return None, "sex unknown (no PatientSex M or F, no sex column)"
    for_sex = [r for r in rules if r.sex is None or r.sex == sex]
    if not for_sex:
        return None, f"{name} gives no {klass} cut-off for {'men' if sex == 'M' else 'women'}"
    if any(r.needs_bmi for r in for_sex) and bmi is None:
        return None, "BMI unknown (needs the weight, PatientWeight or a weight_kg column, and the height)"
    hit = [r for r in for_sex if r.applies(sex, bmi)]
    if not hit:
        return None, f"{name} gives no {klass} cut-off at BMI {bmi:.1f}"
    rule = hit[0]
    return bool(float(value) < rule.below), rule.text()


#: Optional columns of the heights table (``--heights``) that the cut-offs read.
SEX_COLUMN, WEIGHT_COLUMN = "sex", "weight_kg"


def read_sex_weight(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The optional ``sex`` and ``weight_kg`` columns of a heights table, by the row's id (the first present
    of ``case_id``, ``patient_id``, ``name``, as :func:`kerasmuscle.core.measure.read_heights` reads it).

    Returns:
        id -> ``{"sex": "M" | "F" | None, "weight_kg": float | None}`` (empty when neither column exists).

    Raises:
        ReadError: a sex that is not M, F, male, female (or empty), or a weight that is not a positive number
            below 500 kg; the cause names the line and the column.
    """
    from kerasmuscle.core.measure import _ID_COLUMNS

    path = Path(path)
    rows = _csv_rows(path, "height table")
    if not rows:
        return {}
    header = [h.strip().lower() for h in rows[0]]
    id_col = next((c for c in _ID_COLUMNS if c in header), None)
    if id_col is None or not ({SEX_COLUMN, WEIGHT_COLUMN} & set(header)):
        return {}
    at = {c: header.index(c) for c in (id_col, SEX_COLUMN, WEIGHT_COLUMN) if c in header}
    out: dict[str, dict[str, Any]] = {}
    for line, cells in enumerate(rows[1:], start=2):
        cell = {c: (cells[i].strip() if i < len(cells) else "") for c, i in at.items()}
        key = cell[id_col]
        if not key:
            continue
        sex_text, weight_text = cell.get(SEX_COLUMN, ""), cell.get(WEIGHT_COLUMN, "")
        sex = normalise_sex(sex_text)
        if sex_text and sex is None and sex_text.upper() not in ("O", "U", "UNKNOWN"):
            raise ReadError(path, f"line {line}: column sex: {sex_text!r} is not M, F, male or female (or empty)")
        weight = _number(path, line, WEIGHT_COLUMN, weight_text)
        if weight is not None and not 0 < weight < 500:
            raise ReadError(path, f"line {line}: column weight_kg: {weight_text} kg is outside 0..500 kg")
        out[key] = {"sex": sex, "weight_kg": weight}
    return out


def patient_facts(keys: list[str], table: Mapping[str, Mapping[str, Any]] | None, scan, height_m: float | None
                  ) -> tuple[str | None, float | None, dict[str, str]]:
    """The patient's sex and BMI for the cut-offs: from the heights table's ``sex``/``weight_kg`` row for
    the first of ``keys`` found, else DICOM PatientSex/PatientWeight; returns ``(sex, bmi, sources)``."""
    row: Mapping[str, Any] = {}
    for key in keys:
        if table and key in table:
            row = table[key]
            break
    info = getattr(scan, "dicom", None)
    sources: dict[str, str] = {}
    sex = row.get("sex")
    if sex is not None:
        sources["sex"] = "csv"
    else:
        sex = normalise_sex(info.tags.get("patient_sex")) if info is not None else None
        sources["sex"] = "dicom" if sex is not None else "unknown"
    weight = row.get("weight_kg")
    if weight is not None:
        sources["weight"] = "csv"
    else:
        weight = info.patient_weight_kg if info is not None else None
        sources["weight"] = "dicom" if weight is not None else "unknown"
    return sex, bmi(weight, height_m), sources
