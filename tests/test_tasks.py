"""Task builders: mention (weak labels with negation), diagnosis, instruction."""

import pytest

from clinitune.data.ingest import Note
from clinitune.data.tasks import build
from clinitune.data.tasks.diagnosis import normalize_icd10cm
from clinitune.data.tasks.mention import affirmed_mentions
from clinitune.errors import RecipeError
from clinitune.recipe import DiagnosisTask, InstructionTask, MentionTask, load_recipe

ARREST = ("cardiac arrest", "code blue", "ROSC", "CPR", "VF arrest", "VT arrest", "PEA")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Pt had a cardiac arrest on the floor.", True),
        ("Code blue called at 03:10, ROSC after 2 rounds.", True),
        ("Received CPR for 12 minutes.", True),
        ("Found in PEA, epinephrine given.", True),
        ("VF arrest, shocked x3.", True),
        ("No cardiac arrest during this admission.", False),
        ("High risk of cardiac arrest given QT prolongation.", False),
        ("Patient denies any history of CPR.", False),
        ("Discussed CPR and intubation; patient wishes full code.", False),
        ("A pea-sized nodule in the left lobe.", False),  # PEA is case-sensitive
        ("Family history of cardiac arrest in father.", False),
        ("No chest pain. Later had a cardiac arrest.", True),  # negation ends at the sentence
        ("Rule out cardiac arrest etiology.", False),
    ],
)
def test_weak_mention_labels(text, expected):
    assert bool(affirmed_mentions(text, ARREST, 6)) is expected


def _note(text="", **meta):
    return Note("n1", "p1", "src", text, None, meta)


def test_mention_record_from_patterns_and_from_column():
    spec = MentionTask(
        question="Does the note mention an in-hospital cardiac arrest?", patterns=list(ARREST)
    )
    (rec,) = build(_note("Code blue, ROSC achieved."), "arrest", spec)
    assert rec["completion"] == "yes" and rec["label_source"] == "weak"
    assert rec["instruction"].endswith("Answer yes or no.")
    spec = MentionTask(question="Error present?", label_field="flag")
    assert build(_note("x", flag="1"), "t", spec)[0]["completion"] == "yes"
    assert build(_note("x", flag="FALSE"), "t", spec)[0]["completion"] == "no"
    assert build(_note("x", flag=""), "t", spec) == "missing_label"
    assert build(_note("x", flag="maybe"), "t", spec) == "unrecognized_label"


def test_diagnosis_record_and_icd10cm_codes():
    assert normalize_icd10cm("i469") == "I46.9"
    assert normalize_icd10cm("S72.001A") == "S72.001A"
    assert normalize_icd10cm("E11") == "E11"
    assert normalize_icd10cm("123.4") is None and normalize_icd10cm("U") is None
    spec = DiagnosisTask(label_field="dx", code_field="icd")
    note = _note(
        "CHIEF COMPLAINT\n\nChest pain.\n\nHPI\n\n54M, pain at rest.\n",
        dx="Unstable angina",
        icd="I20.0",
    )
    (rec,) = build(note, "dx", spec)
    assert rec["completion"] == "Unstable angina; ICD-10-CM I20.0"
    assert "Chief complaint:" in rec["input"] and rec["code"] == "I20.0"
    assert build(_note("HPI: x", icd="ZZZ"), "dx", spec) == "invalid_icd10cm_code"
    assert build(_note("HPI: x"), "dx", spec) == "missing_label"
    with pytest.raises(ValueError, match="label_field and/or code_field"):
        DiagnosisTask()


def test_instruction_record():
    spec = InstructionTask()
    (rec,) = build(
        _note(
            "Metformin: for type 2 diabetes.",
            instruction="List the medications and say why.",
            input="Doctor: ... metformin ...",
        ),
        "ins",
        spec,
    )
    assert rec["completion"].startswith("Metformin") and rec["input"].startswith("Doctor")
    assert build(_note("x"), "ins", spec) == "missing_instruction"


def test_mention_task_needs_a_label_source():
    with pytest.raises(RecipeError, match="set label_field or patterns"):
        load_recipe("quickstart", ["data.tasks.arrest={type: mention, question: q}"])
