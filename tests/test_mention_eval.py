"""Yes/no classification evaluation (mention detection, MEDEC error flag): choice scores equal
a naive forward pass, invalid generations count as wrong, collapse is flagged, bad files name
the row."""

import json
import math

import pytest
import torch

from clinitune.errors import DataError
from clinitune.evaluate.mention import _metrics, _read_file, classification
from clinitune.evaluate.registry import EvalContext, LoadedModel
from clinitune.recipe import ClassifySpec, Recipe
from clinitune.run import RunLayout


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()


def _recipe(tmp_path, **spec):
    src = {
        "name": "s",
        "path": "x.csv",
        "columns": {"note_id": "id", "text": "text"},
        "tasks": ["c"],
    }
    data = {"sources": [src], "tasks": {"c": {"type": "cpt"}}}
    r = Recipe.model_validate(
        {"name": "t", "data": data, "evaluate": {"classification": [{"name": "err", **spec}]}}
    )
    r._base_dir = tmp_path
    return r


def _write(tmp_path, rows):
    p = tmp_path / "cls.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


ROWS = [
    {"id": "a", "text": "Patient coded on the ward; ROSC after two rounds of CPR.", "label": 1},
    {"id": "b", "text": "Ankle sprain, discharged with crutches.", "label": 0},
    {"id": "c", "text": "No cardiac arrest. Chest pain resolved.", "label": "0"},
    {"id": "d", "text": "Found pulseless, PEA arrest, epinephrine given.", "label": "yes"},
    {"id": "e", "text": "Follow-up for hypertension.", "label": "no"},
]


def test_choice_probability_equals_a_naive_forward(tmp_path, tiny, tokenizer):
    _write(tmp_path, ROWS)
    recipe = _recipe(
        tmp_path, path="cls.jsonl", id_field="id", question="Does the note describe a cardiac "
        "arrest?", methods=["choice", "generate"], calibrate=True, batch_size=2,
    )  # fmt: skip
    ctx = EvalContext(recipe, RunLayout(tmp_path / "run"), "cpu")
    out = classification(ctx, LoadedModel("tiny", tmp_path, tiny, tokenizer))["err"]
    assert out["n"] == 5
    per = {e["id"]: e for e in out["per_example"]}
    assert [per[k]["gold"] for k in "abcde"] == ["yes", "no", "no", "yes", "no"]

    from clinitune.data.pack import ChatFormatter

    fmt = ChatFormatter(tokenizer)
    yes, no = fmt.encode("yes"), fmt.encode("no")
    for r in ROWS:
        rec = {
            "instruction": "Does the note describe a cardiac arrest? Answer yes or no.",
            "input": r["text"],
        }
        prompt = fmt.encode(fmt.prompt_text(rec))

        def lp(cont, prompt=prompt):
            ids = torch.tensor([prompt + cont])
            with torch.inference_mode():
                logp = torch.log_softmax(tiny(input_ids=ids).logits[0].float(), -1)
            return sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(cont))

        a, b = lp(yes), lp(no)
        want = math.exp(a) / (math.exp(a) + math.exp(b))
        assert abs(per[r["id"]]["p_pos"] - want) < 1e-4
        assert per[r["id"]]["choice"] == ("yes" if want >= 0.5 else "no")
        assert per[r["id"]]["generate"] in ("yes", "no", "invalid")
    ch = out["choice"]
    assert ch["confusion"][0][0] + ch["confusion"][0][1] == 2  # gold positives
    assert "collapse" in ch and "collapsed" in ch["collapse"]
    assert 0 < out["choice_calibrated"]["content_free_p_positive"] < 1
    assert 0.0 <= out["generate"]["invalid_rate"] <= 1.0


def test_invalid_answers_count_as_wrong_and_collapse_is_flagged():
    gold = ["yes"] * 10 + ["no"] * 10
    # A collapsed model: "no" to everything (the ED-notes model's cardiac-arrest failure).
    m = _metrics(gold, ["no"] * 20, None, "yes", "no")
    assert m["collapse"]["collapsed"] and m["recall"] == 0.0 and m["accuracy"] == 0.5
    # Invalid answers on negatives must not become free true negatives.
    m = _metrics(gold, ["yes"] * 10 + ["invalid"] * 10, None, "yes", "no")
    assert m["accuracy"] == 0.5 and m["confusion"] == [[10, 0], [10, 0]]
    assert m["collapse"]["pred_distribution"]["invalid"] == 0.5
    # A useful model is not flagged.
    m = _metrics(gold, ["yes"] * 9 + ["no"] * 11, [0.9] * 9 + [0.1] * 11, "yes", "no")
    assert not m["collapse"]["collapsed"] and m["auroc"] > 0.9


def test_bad_classification_files_name_file_and_row(tmp_path):
    spec = ClassifySpec(name="x", path="f.jsonl", question="q?")
    p = _write(tmp_path, [{"text": "ok", "label": 1}, {"text": "", "label": 0}])
    with pytest.raises(DataError, match=r"cls.jsonl: row 2: field 'text'"):
        _read_file(spec, p)
    p = _write(tmp_path, [{"text": "ok"}])
    with pytest.raises(DataError, match=r"row 1: field 'label'"):
        _read_file(spec, p)
    csv = tmp_path / "m.csv"
    csv.write_text("Text ID,Text\nms-1,hello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"m.csv: no column 'text'"):
        _read_file(spec, csv)
    with pytest.raises(ValueError, match="exactly one of task or path"):
        ClassifySpec(name="x")
    with pytest.raises(ValueError, match="needs a question"):
        ClassifySpec(name="x", path="f.csv")


def test_medec_validation_file_loads(shared_data):
    path = shared_data / "medec_ms" / "MEDEC-MS-ValidationSet-with-GroundTruth-and-ErrorType.csv"
    if not path.exists():
        pytest.skip("shared MEDEC data not present")
    spec = ClassifySpec(
        name="medec", path=str(path), text_field="Text", label_field="Error Flag",
        id_field="Text ID", question="Does this clinical text contain a medical error?",
    )  # fmt: skip
    rows = _read_file(spec, path)
    assert len(rows) == 574 and sum(y for _, _, y in rows) == 319  # SOURCE.md's counts
    assert rows[0][0] == "ms-val-0"


def test_classification_of_a_prepared_mention_task(tmp_path, tiny_model_dir, tiny, tokenizer):
    """task: reads the prepared split's records of a `mention` task (weak labels from patterns
    with negation): gold labels follow the notes, and the metrics cover every test record."""
    import csv

    from clinitune.data.prepare import prepare, read_records
    from clinitune.recipe import load_recipe

    texts = [
        "ED COURSE: Patient had a PEA arrest, ROSC after CPR.",
        "ED COURSE: No cardiac arrest. Discharged home.",
        "ED COURSE: Code blue called for VF arrest; shocked.",
        "ED COURSE: Ankle sprain, splinted.",
    ]
    with open(tmp_path / "ed.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["note_id", "patient_id", "text"])
        for i in range(24):
            w.writerow([f"n{i:02d}", f"p{i:02d}", f"{texts[i % 4]} Visit {i}."])
    (tmp_path / "r.yaml").write_text(
        f"""name: arrest
model: {{name: {tiny_model_dir}}}
run_dir: {tmp_path / "run"}
data:
  sources:
    - {{name: ed, path: ed.csv, columns: {{note_id: note_id, patient_id: patient_id, text: text}},
       tasks: [arrest]}}
  tasks:
    arrest: {{type: mention, question: "Does this note describe a cardiac arrest?",
              patterns: [cardiac arrest, code blue, ROSC, CPR, VF arrest, PEA]}}
  phi: {{policy: "off"}}
  dedup: {{exact: false, near: false}}
  split: {{valid: 0.0, test: 0.5}}
evaluate:
  classification: [{{name: arrest, task: arrest, methods: [choice]}}]
""",
        encoding="utf-8",
    )
    recipe = load_recipe(str(tmp_path / "r.yaml"))
    layout = RunLayout(tmp_path / "run")
    prepare(recipe, layout)
    test = [r for r in read_records(layout.prepared, "test") if r["task"] == "arrest"]
    out = classification(EvalContext(recipe, layout, "cpu"),
                         LoadedModel("tiny", tmp_path, tiny, tokenizer))["arrest"]  # fmt: skip
    assert out["n"] == len(test) and "generate" not in out
    gold = {f"ed:{r['note_id']}": r["completion"] for r in test}
    assert {e["id"]: e["gold"] for e in out["per_example"]} == gold
    # the weak labels: PEA/ROSC/CPR and code blue/VF notes are "yes", the negated one "no"
    assert all(v == ("yes" if int(k[4:]) % 4 in (0, 2) else "no") for k, v in gold.items())
    # an empty split is an error naming the task and split, not a metric over nothing
    from clinitune.errors import StageError

    empty = recipe.model_copy(deep=True)
    empty.evaluate.classification[0].split = "valid"  # data.split.valid is 0
    with pytest.raises(StageError, match="no 'arrest' records in the prepared valid split"):
        classification(
            EvalContext(empty, layout, "cpu"), LoadedModel("tiny", tmp_path, tiny, tokenizer)
        )
