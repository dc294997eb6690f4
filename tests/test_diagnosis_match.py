"""Assigned-diagnosis matching edge cases: opposite diagnoses never match by default, negated
answers never match, only real ICD-10-CM codes are read from the text, and the description
index prefers the billable code."""

import pytest

from clinitune.evaluate import diagnosis as dx
from clinitune.recipe import DiagnosisEvalSpec

OPPOSITES = [
    ("Hypokalemia", "Hyperkalemia"),
    ("Hypertension", "Hypotension"),
    ("NSTEMI", "STEMI"),
    ("Type 1 diabetes", "Type 2 diabetes"),
    ("No pneumonia", "Pneumonia"),
]


def _desc(pred: str, gold: str, threshold: float | None = None, embed=None) -> bool | None:
    return dx.score(dx.candidates(pred, 1), gold, None, threshold, embed)["top1"]["description"]


def test_fuzzy_similarity_is_off_by_default():
    assert DiagnosisEvalSpec(name="x", task="t").similarity is None


@pytest.mark.parametrize(("a", "b"), OPPOSITES)
def test_opposite_diagnoses_do_not_match_by_default(a, b):
    assert _desc(a, b) is False
    assert _desc(b, a) is False


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("Hypokalemia", "hypokalemia"),
        ("  type 2 DIABETES  ", "Type 2 diabetes"),
        ("organism unspecified pneumonia", "Pneumonia, unspecified organism"),
        ("Non-ST elevation (NSTEMI) myocardial infarction",) * 2,  # "non" is not a negation
        ("Absent bowel sounds", "Absent bowel sounds"),  # "absent" is a finding, not a negation
    ],
)
def test_normalized_exact_descriptions_match(pred, gold):
    assert _desc(pred, gold) is True


def test_fuzzy_match_is_opt_in_and_never_accepts_a_negated_answer():
    # opt-in fuzzy matching does accept opposites (the documented reason it is off by default)
    assert _desc("Hypokalemia", "Hyperkalemia", 0.85) is True
    # ... but a negated answer matches neither by the fuzzy ratio nor by the embedding
    assert _desc("No pneumonia", "Pneumonia", 0.85) is False
    assert _desc("No pneumonia", "Pneumonia", 0.5, embed=lambda a, b: True) is False
    assert _desc("Negative for pneumonia", "Pneumonia", 0.5) is False
    assert _desc("Pneumonia", "No pneumonia", 0.85) is False


def test_a_negated_answer_does_not_match_the_assigned_code():
    s = dx.score(dx.candidates("No pneumonia (J18.9)", 1), None, "J18.9")
    assert s["top1"] == {"code_exact": False, "code_category": False, "description": False}


def test_only_valid_icd10cm_codes_are_read_from_the_text():
    assert dx.candidates("Elevated A1C", 1) == [{"description": "Elevated A1C", "code": None}]
    # B12 is not a code: the words stay, and the index maps the description to D51
    assert dx.candidates("Vitamin B12 deficiency anemia", 1) == [
        {"description": "Vitamin B12 deficiency anemia", "code": "D51"}
    ]
    assert dx.candidates("Vitamin B12 deficiency anemia (D51.0)", 1) == [
        {"description": "Vitamin B12 deficiency anemia", "code": "D51.0"}
    ]
    # an explicitly labelled code that does not exist is dropped, and the index supplies one
    assert dx.candidates("Unstable angina; ICD-10-CM I20.77", 1) == [
        {"description": "Unstable angina", "code": "I20.0"}
    ]


def test_the_index_prefers_the_billable_code_on_a_shared_description():
    import simple_icd_10_cm as cm

    idx = dx._index()
    assert idx[dx.normalize("Pneumonia, unspecified organism")] == "J18.9"
    leaves = {
        dx.normalize(cm.get_description(c))
        for c in cm.get_all_codes(with_dots=True)
        if cm.is_category_or_subcategory(c) and cm.is_leaf(c)
    }
    assert all(cm.is_leaf(code) for key, code in idx.items() if key in leaves)


def test_exact_code_metric_pneumonia_unspecified_organism_vs_j18_9():
    s = dx.score(dx.candidates("Pneumonia, unspecified organism", 1), None, "J18.9")
    assert s["top1"] == {"code_exact": True, "code_category": True, "description": True}
