"""Note scores: rouge-score's F-measures, and ACI-Bench's division-by-division scoring."""

import csv

from clinitune.data.sections import division_texts
from clinitune.evaluate.rouge import division_scores, rouge_scores
from clinitune.recipe import load_recipe


def _aci_notes(k: int) -> list[str]:
    path = load_recipe("quickstart").resolve_path("pkg://samples/aci_bench/encounters.csv")
    with open(path, encoding="utf-8", newline="") as f:
        return [r["note"] for _, r in zip(range(k), csv.DictReader(f), strict=False)]


def test_rouge_scores_are_rouge_score_fmeasures_x100():
    from rouge_score import rouge_scorer

    pred, ref = "the knee is swollen\nice and rest", "the left knee is swollen\nrest"
    (s,) = rouge_scores([pred], [ref])
    ours = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True).score(ref, pred)
    assert abs(s["rougeLsum"] - 100 * ours["rougeLsum"].fmeasure) < 1e-9
    assert rouge_scores([ref], [ref])[0]["rouge1"] == 100


def test_full_notes_are_scored_by_aci_division():
    notes = _aci_notes(3)
    assert all(sum(bool(t) for t in division_texts(n).values()) >= 3 for n in notes)
    same = division_scores(notes, notes)
    assert set(same) == {"subjective", "objective_exam", "objective_results", "assessment_and_plan"}
    for div in same.values():  # a division both lack is ACI-Bench's EMPTY marker on both: 100
        assert div["rouge1"] == 100 and div["examples"] == 3 and div["missing_in_output"] == 0
    # an output without its assessment and plan scores 0 there (marker vs text), and is counted
    cut = [n[: n.upper().index("ASSESSMENT")] for n in notes]
    res = division_scores(cut, notes)
    ap = res["assessment_and_plan"]
    assert ap["rouge1"] == 0 and ap["missing_in_output"] == 3 and ap["missing_in_reference"] == 0
    assert res["subjective"]["rouge1"] == 100
    # single-section targets (an MDM paragraph) are not full notes: no division scores
    assert division_scores(["plan: ice"], ["Rest, ice and follow up."]) == {}
