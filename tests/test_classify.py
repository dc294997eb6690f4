"""Binary metrics against hand counts, and the label-collapse detector."""

import pytest

from clinitune.evaluate.classify import binary_metrics, collapse_report


def test_binary_metrics_hand_counts():
    gold = ["yes", "yes", "yes", "no", "no", "no", "no", "no"]
    pred = ["yes", "yes", "no", "yes", "no", "no", "no", "no"]
    m = binary_metrics(gold, pred, scores=[0.9, 0.8, 0.4, 0.6, 0.3, 0.2, 0.1, 0.05])
    # tp 2, fn 1, fp 1, tn 4
    assert m["confusion"] == [[2, 1], [1, 4]]
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    mcc = (2 * 4 - 1 * 1) / ((3 * 3 * 5 * 5) ** 0.5)
    assert m["mcc"] == pytest.approx(mcc)
    # AUROC: positives 0.9, 0.8, 0.4 vs negatives 0.6, 0.3, 0.2, 0.1, 0.05 -> 14 of 15 pairs
    assert m["auroc"] == pytest.approx(14 / 15)


def test_collapse_flags_all_no_on_rare_positive():
    gold = ["yes"] * 5 + ["no"] * 95
    pred = ["no"] * 100
    c = collapse_report(gold, pred, labels=["yes", "no"])
    assert c["collapsed"] and c["pred_majority"] == "no" and c["pred_majority_share"] == 1.0
    assert c["per_class_recall"] == {"yes": 0.0, "no": 1.0}
    assert c["gain_over_majority"] == pytest.approx(0.0)
    assert c["pred_entropy"] == 0.0 and 0 < c["gold_entropy"] < 1


def test_collapse_not_flagged_for_a_useful_model():
    gold = ["yes"] * 20 + ["no"] * 80
    pred = ["yes"] * 16 + ["no"] * 4 + ["no"] * 76 + ["yes"] * 4
    c = collapse_report(gold, pred, labels=["yes", "no"])
    assert not c["collapsed"] and c["gain_over_majority"] > 0.1


def test_collapse_when_gold_is_balanced_but_predictions_are_not():
    gold = ["a", "b", "c"] * 30
    pred = ["a"] * 88 + ["b", "c"]
    assert collapse_report(gold, pred)["collapsed"]


def test_bad_lengths():
    with pytest.raises(ValueError):
        binary_metrics(["yes"], [])
    with pytest.raises(ValueError):
        collapse_report([], [])
