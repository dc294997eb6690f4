"""Column presets for known exports, on synthetic files with their exact columns."""

import csv
import gzip

import pytest

from clinitune.data.ingest import ingest_source
from clinitune.errors import DataError, RecipeError
from clinitune.recipe import SourceSpec, load_recipe

MIMIC_COLUMNS = [
    "note_id",
    "subject_id",
    "hadm_id",
    "note_type",
    "note_seq",
    "charttime",
    "storetime",
    "text",
]


def _mimic_fixture(path):
    """Synthetic rows in MIMIC-IV-Note discharge.csv.gz format (never real MIMIC text)."""
    rows = [
        [
            "10000032-DS-21",
            "10000032",
            "22595853",
            "DS",
            "21",
            "2180-05-07 00:00:00",
            "2180-05-09 15:26:00",
            "Name:  ___  Unit No:   ___\n\nChief Complaint:\nabdominal pain\n\n"
            "History of Present Illness:\n___ is a 52F with ascites.\n\n"
            "Brief Hospital Course:\nParacentesis, improved.\n\nDischarge Diagnosis:\nascites\n",
        ],
        [
            "10000032-DS-22",
            "10000032",
            "22841357",
            "DS",
            "22",
            "2180-06-27 00:00:00",
            "",
            "Chief Complaint:\nrecurrent ascites\n\nDischarge Diagnosis:\ncirrhosis\n",
        ],
        ["10000084-DS-17", "10000084", "23052089", "DS", "17", "2160-11-25 00:00:00", "", ""],
    ]
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(MIMIC_COLUMNS)
        w.writerows(rows)


def test_mimic_iv_note_preset_reads_gzip_csv(tmp_path):
    p = tmp_path / "discharge.csv.gz"
    _mimic_fixture(p)
    spec = SourceSpec(name="mimic", path=str(p), preset="mimic_iv_note", tasks=["t"])
    assert spec.columns.patient_id == "subject_id"
    res = ingest_source(spec, p)
    assert res.counts == {
        "rows_in": 3,
        "kept": 2,
        "quarantined": 1,
        "quarantine_reasons": {"empty_text": 1},
    }
    assert {n.patient_id for n in res.notes} == {"10000032"}
    assert res.notes[0].meta["hadm_id"] == "22595853"
    assert "\n" in res.notes[0].text


def test_preset_columns_can_be_extended_and_overridden():
    spec = SourceSpec.model_validate(
        {
            "name": "aci",
            "path": "x.csv",
            "preset": "mts_dialog",
            "tasks": ["t"],
            "columns": {"patient_id": "PATIENT", "meta": {"speaker": "spk"}},
        }
    )
    assert spec.columns.patient_id == "PATIENT"
    assert spec.columns.note_id == "ID"
    assert spec.columns.meta == {"section": "section_header", "speaker": "spk"}


def test_unknown_preset_and_missing_columns_are_recipe_errors():
    with pytest.raises(RecipeError, match="preset"):
        load_recipe("quickstart", ["data.sources.aci.preset=mimic_iii"])
    with pytest.raises(RecipeError, match=r"data\.sources\.0\.columns: missing required key"):
        load_recipe(
            "quickstart", ["data.sources.0={name: aci, path: x.csv, tasks: [assessment_plan]}"]
        )


def test_bundled_sample_with_aci_preset(tmp_path):
    r = load_recipe("quickstart")
    path = r.resolve_path("pkg://samples/aci_bench/encounters.csv")
    spec = SourceSpec(name="aci", path=str(path), preset="aci_bench", tasks=["t"])
    res = ingest_source(spec, path)
    assert res.counts["kept"] == 60 and res.notes[0].dialogue


def test_corrupt_gzip_is_a_data_error(tmp_path):
    p = tmp_path / "bad.csv.gz"
    p.write_bytes(b"not gzip at all")
    spec = SourceSpec(name="m", path=str(p), preset="mimic_iv_note", tasks=["t"])
    with pytest.raises(DataError, match="not a valid gzip file"):
        ingest_source(spec, p)
