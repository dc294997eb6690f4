"""The concept-level rubric: perturbations move the right count, and it tracks the human
fact-level scores of MTS-Dialog's correlation study."""

import sys
from pathlib import Path

import pytest

from clinitune.evaluate.rubric import concepts, rubric

SRC = (
    "Doctor: Where is the pain? Patient: My left knee. I take ibuprofen 400 mg twice a day "
    "and metformin 500 mg. Doctor: Any fever? Patient: No fever."
)
REF = "Left knee pain. Medications: ibuprofen 400 mg twice daily, metformin 500 mg. Denies fever."


def test_concepts_mark_negation_numbers_and_keep_laterality():
    c = concepts("Denies chest pain or fever, but reports nausea. Lisinopril 10 mg. Left knee.")
    assert {"no:chest", "no:pain", "no:fever", "nausea", "10mg", "left", "knee"} <= c
    assert "chest" not in c and "no:nausea" not in c  # "but" ends the negation scope


@pytest.mark.parametrize(
    "output,rises",
    [
        ("Left knee pain. Medications: metformin 500 mg. Denies fever.", "missed"),  # drop a drug
        (REF.replace("Left", "Right"), "incorrect"),  # laterality flip
        (REF.replace("400", "4000"), "incorrect"),  # dose x10
        (REF.replace("Denies fever", "Fever"), "incorrect"),  # negation flip
        (REF + " Takes ibuprofen twice a day.", None),  # restated, nothing new
    ],
)
def test_perturbations_move_the_right_count(output, rises):
    base = rubric(SRC, REF, REF)
    assert base["missed"] == base["incorrect"] == base["irrelevant"] == 0
    r = rubric(SRC, REF, output)
    if rises is None:
        assert r["missed"] == r["incorrect"] == 0, r
    elif rises == "missed":  # a dropped fact is missed, and nothing wrong was added
        assert r["missed"] > 0 and r["incorrect"] == 0, r
    else:  # a changed fact is incorrect (and the original one is then missed too)
        assert r["incorrect"] > 0, r


def test_irrelevant_is_true_to_the_source_but_not_in_the_reference():
    r = rubric(SRC, "Left knee pain.", "Left knee pain. Takes metformin.")
    assert r["irrelevant"] == 1 and r["incorrect"] == 0 and r["missed"] == 0


def test_rubric_tracks_human_scores_on_the_mts_correlation_study(shared_data):
    study = shared_data / "mts_dialog" / "Correlation-Study"
    if not study.exists():
        pytest.skip("shared MTS-Dialog data not present")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from rubric_validation import correlation_study

    c = correlation_study(study)
    assert c["rows"] == 400
    # measured 0.650 and 0.229 (benchmarks/RESULTS.md); ROUGE-1 baselines 0.602 and 0.099
    assert c["missed_rate~OmissionRate"]["rho"] > 0.5
    assert c["incorrect_rate~HallucinationRate"]["rho"] > 0.15


def test_one_negation_scope_for_both_concept_metrics():
    """NegEx-style scope shared by the rubric's concepts and concept F1: a cue negates the next
    5 tokens, "and" does not end the scope, "but" and sentence punctuation do."""
    from clinitune.evaluate.negation import negated
    from clinitune.evaluate.rubric import concepts
    from clinitune.evaluate.semantic import medical_concepts

    text = "denies fever chills and night sweats but has cough . no rash"
    toks = text.split(" ")
    assert [t for t, n in zip(toks, negated(toks), strict=True) if n] == [
        "fever", "chills", "and", "night", "sweats", "rash",
    ]  # fmt: skip
    text = "Denies chest pain and asthma but reports cough. Takes aspirin."
    assert {"no:chest", "no:pain", "no:asthma", "cough", "aspirin"} <= concepts(text)
    med = medical_concepts(text)
    assert "no:chest pain" in med and "no:asthma" in med and "drug:aspirin" in med
