"""Model-vs-baseline comparisons: every metric gets a paired test, and the report colours a
significant change by the metric's direction."""

import random

from clinitune.evaluate.suite import compare
from clinitune.report.html import _cls, comparison_rows


def _per_example(seed: int, skill: float) -> dict:
    rng = random.Random(seed)
    gold = ["yes" if i % 3 == 0 else "no" for i in range(120)]
    cls = []
    for i, g in enumerate(gold):
        p = min(1.0, max(0.0, (0.9 if g == "yes" else 0.1) * skill + rng.random() * (1 - skill)))
        y = "yes" if p >= 0.5 else "no"
        cls.append({"id": str(i), "gold": g, "p_pos": p, "choice": y,
                    "generate": "invalid" if i % 17 == 0 else y})  # fmt: skip
    rouge = [{"task": t, "source": "s", "note_id": str(i), "rouge1": 30 + 20 * skill + rng.random(),
              "rouge2": 10.0, "rougeL": 20.0, "rougeLsum": 25 + 20 * skill + rng.random()}
             for t in ("mdm", "soap") for i in range(30)]  # fmt: skip
    held = [{"task": t, "note_id": str(i), "nll": (3 - skill) * 50 + rng.random(), "tokens": 50}
            for t in ("mdm", "soap") for i in range(30)]  # fmt: skip
    mcq = [{"qid": i, "correct": rng.random() < 0.3 + 0.5 * skill,
            "correct_norm": rng.random() < 0.3} for i in range(200)]  # fmt: skip
    return {"classification": {"arrest": cls}, "rouge": rouge, "held_out": held, "mcq": {"m": mcq}}


def test_compare_covers_every_metric_with_an_interval():
    c = compare(_per_example(0, 0.2), _per_example(1, 0.9), 0, {"arrest": "yes"})
    for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert {"diff", "ci_low", "ci_high"} <= set(c["rouge"][k])
    assert set(c["rouge_by_task"]) == {"mdm", "soap"} and c["rouge_by_task"]["mdm"]["rouge1"]
    assert set(c["held_out_loss_by_task"]) == {"mdm", "soap"}
    assert c["held_out_loss"]["significant"] and c["held_out_loss"]["diff"] < 0
    m = c["mcq"]["m"]
    assert {"p_value", "ci_low", "ci_high"} <= set(m) and m["significant"] and m["diff"] > 0
    assert "m.acc_norm" in c["mcq"]
    choice = c["classification"]["arrest"]["choice"]
    assert "p_value" in choice and "ci_low" in choice
    met = choice["metrics"]
    assert {"precision", "recall", "f1", "mcc", "balanced_accuracy", "auroc"} == set(met)
    assert met["auroc"]["significant"] and met["auroc"]["diff"] > 0
    gen = c["classification"]["arrest"]["generate"]["metrics"]
    assert "auroc" not in gen and "f1" in gen  # no probabilities from generation


def test_report_marks_gains_and_losses_by_direction():
    assert _cls({"diff": -0.2, "significant": True}, "lower") == "good"
    assert _cls({"diff": -0.2, "significant": True}, "higher") == "bad"
    assert _cls({"diff": 0.2, "significant": True}, "higher") == "good"
    assert _cls({"diff": 0.2, "significant": False}, "higher") == ""
    base, other = _per_example(0, 0.2), _per_example(1, 0.9)

    def model(loss: float, acc: float) -> dict:
        return {
            "held_out": {"loss": loss, "perplexity": 9.0, "by_task": {"mdm": {"loss": loss}}},
            "mcq": {"m": {"acc": acc, "acc_norm": 0.3, "n": 200, "chance": 0.25}},
        }

    metrics = {
        "models": {"base": model(2.8, 0.3), "final": model(2.1, 0.7)},
        "baseline": "base",
        "comparisons": {"final": compare(base, other, 0, {"arrest": "yes"})},
    }  # fmt: skip
    rows = {r["name"]: r for r in comparison_rows(metrics)}
    loss = rows["held-out loss (all tasks, token-weighted)"]
    assert _cls(loss["cmp"]["final"], loss["better"]) == "good"
    acc = next(r for n, r in rows.items() if n.startswith("m acc ("))
    assert _cls(acc["cmp"]["final"], acc["better"]) == "good"
    assert "final" in rows["m acc_norm"]["cmp"] and "final" in rows["held-out loss · mdm"]["cmp"]


def test_loss_pairs_every_chunk_of_a_long_note():
    """A note held out in several chunks has several rows with one note_id: each pairs with the
    same chunk of the other model, so the paired diff equals the difference of the losses."""

    def rows(nlls):
        ids = ["n1", "n1", "n2"]  # n1 in two chunks
        return [{"task": "t", "source": "s", "note_id": i, "nll": x, "tokens": 10}
                for i, x in zip(ids, nlls, strict=True)]  # fmt: skip

    a, b = rows([10.0, 50.0, 20.0]), rows([10.0, 10.0, 20.0])
    c = compare({"held_out": a}, {"held_out": b}, 0)["held_out_loss"]
    assert c["n"] == 3 and abs(c["diff"] - (40 / 30 - 80 / 30)) < 1e-12
