"""Bad evaluation input ends in one clear line naming the file, row and field (never a
traceback, never note text), and degenerate outputs are not scored as perfect."""

import http.client
import json

import pytest
import yaml
from typer.testing import CliRunner

from clinitune.cli import app
from clinitune.errors import DataError, RecipeError
from clinitune.evaluate.mention import _read_file
from clinitune.evaluate.rubric import rubric, summarize
from clinitune.recipe import ClassifySpec, JudgeSpec, bundled_recipe, load_recipe


def _quickstart(tmp_path, **evaluate):
    d = yaml.safe_load(bundled_recipe("quickstart").read_text())
    d["evaluate"].update(evaluate)
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


# ------------------------------------------------------------------ missing evaluation inputs
def test_missing_fewshot_file_is_a_clean_cli_error():
    res = CliRunner().invoke(
        app, ["validate", "quickstart", "--set", "evaluate.mcq.0.fewshot_path=nope_dev.csv"]
    )
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    assert "evaluate.mcq.0.fewshot_path: file not found: nope_dev.csv" in res.output


def test_missing_classification_file_names_the_key(tmp_path):
    cls = {"name": "err", "path": "nope.jsonl", "question": "Any error?"}
    with pytest.raises(
        RecipeError, match=r"r\.yaml: evaluate\.classification\.0\.path: file not found: nope"
    ):
        load_recipe(_quickstart(tmp_path, classification=[cls]))
    (tmp_path / "ok.jsonl").write_text('{"text": "t", "label": 1}\n')
    cls["path"] = "ok.jsonl"
    assert load_recipe(_quickstart(tmp_path, classification=[cls])).evaluate.classification


def test_a_directory_is_not_an_evaluation_file(tmp_path):
    (tmp_path / "bench").mkdir()
    mcq = [{"name": "m", "path": "bench", "format": "mmlu_csv"}]
    with pytest.raises(RecipeError, match=r"evaluate\.mcq\.0\.path: not a file: bench"):
        load_recipe(_quickstart(tmp_path, mcq=mcq))


# ------------------------------------------------------------ classification labels
def _jsonl(tmp_path, rows):
    p = tmp_path / "cls.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


@pytest.mark.parametrize("label", ["2", "unknown", 0.5])
def test_a_label_outside_both_sets_is_an_error(tmp_path, label):
    spec = ClassifySpec(name="x", path="cls.jsonl", question="q?")
    p = _jsonl(tmp_path, [{"text": "a", "label": "No"}, {"text": "b", "label": label}])
    with pytest.raises(DataError, match=rf"cls\.jsonl: row 2: field 'label': '{label}' is not"):
        _read_file(spec, p)


def test_defaults_accept_the_usual_yes_no_codes(tmp_path):
    spec = ClassifySpec(name="x", path="cls.jsonl", question="q?")
    labels = [1, 0, "Yes", "NO", True, False, "y", "n", "negative", " T ", "Positive", 1.0, 0.0]
    p = _jsonl(tmp_path, [{"text": "t", "label": v} for v in labels])
    assert [y for _, _, y in _read_file(spec, p)] == [
        True, False, True, False, True, False, True, False, False, True, True, True, False,
    ]  # fmt: skip


def test_label_field_on_a_text_column_does_not_print_the_text(tmp_path):
    note = "Mr Smith, 67, seen on the ward for chest pain after a fall."
    spec = ClassifySpec(name="x", path="cls.jsonl", question="q?", label_field="text")
    p = _jsonl(tmp_path, [{"text": note, "label": 1}])
    with pytest.raises(DataError) as e:
        _read_file(spec, p)
    msg = str(e.value)
    assert "row 1: field 'text'" in msg and f"a {len(note)}-character value" in msg
    assert "Smith" not in msg and "\n" not in msg
    # short values that are not codes (a name, a date) are not shown either
    for bad in ("John Smith", "03/04/1950"):
        p = _jsonl(tmp_path, [{"text": "t", "label": bad}])
        with pytest.raises(DataError, match="-character value") as e:
            _read_file(ClassifySpec(name="x", path="cls.jsonl", question="q?"), p)
        assert bad not in str(e.value)


def test_configured_positive_and_negative_values(tmp_path):
    spec = ClassifySpec(
        name="x", path="cls.jsonl", question="q?",
        positive_values=["arrest"], negative_values=["none"],
    )  # fmt: skip
    p = _jsonl(tmp_path, [{"text": "a", "label": "Arrest"}, {"text": "b", "label": "none"}])
    assert [y for _, _, y in _read_file(spec, p)] == [True, False]
    p = _jsonl(tmp_path, [{"text": "a", "label": "0"}])  # a default, but not configured here
    with pytest.raises(DataError, match=r"row 1: field 'label': '0' is not a label"):
        _read_file(spec, p)
    both = ClassifySpec(name="x", path="f", question="q?", positive_values=["1", "no"])
    with pytest.raises(DataError, match=r"\['no'\] are in both"):
        _read_file(both, p)


# ------------------------------------------------------------------ degenerate outputs
SRC = "Left knee pain for two weeks. Takes ibuprofen 400 mg."
REF = "Left knee pain. Ibuprofen 400 mg."


def test_an_empty_output_has_undefined_precision_rates_not_zero():
    r = rubric(SRC, REF, "")
    assert r["incorrect_rate"] is None and r["irrelevant_rate"] is None
    assert r["missed_rate"] == 1.0  # every reference concept is missed
    assert rubric(SRC, "", REF)["missed_rate"] is None


def test_summary_skips_undefined_rates_counts_them_and_reports_micro_rates():
    rows = [rubric(SRC, REF, ""), rubric(SRC, REF, REF), rubric(SRC, REF, REF + " Smokes.")]
    s = summarize(rows)
    assert s["empty_outputs"] == 1 and s["empty_references"] == 0
    # mean over the two notes with output concepts; the empty note is not a perfect 0
    assert s["mean_incorrect_rate"] == pytest.approx(
        (rows[1]["incorrect_rate"] + rows[2]["incorrect_rate"]) / 2
    )
    assert s["micro_incorrect_rate"] == pytest.approx(
        sum(r["incorrect"] for r in rows) / sum(r["output_concepts"] for r in rows)
    )
    assert s["micro_missed_rate"] == pytest.approx(
        sum(r["missed"] for r in rows) / sum(r["reference_concepts"] for r in rows)
    )
    only_empty = summarize([rubric(SRC, REF, "")])
    assert only_empty["mean_incorrect_rate"] is None and only_empty["micro_incorrect_rate"] is None
    assert only_empty["mean_missed_rate"] == 1.0


def test_judge_rows_summarize_by_claims():
    rows = [
        {"reference_claims": 2, "output_claims": 0, "missed": 2, "incorrect": 0,
         "irrelevant": 0, "missed_rate": 1.0, "incorrect_rate": None, "irrelevant_rate": None},
        {"reference_claims": 4, "output_claims": 4, "missed": 1, "incorrect": 1,
         "irrelevant": 2, "missed_rate": 0.25, "incorrect_rate": 0.25, "irrelevant_rate": 0.5},
    ]  # fmt: skip
    s = summarize(rows)
    assert s["mean_missed_rate"] == pytest.approx(0.625) and s["micro_missed_rate"] == 0.5
    assert s["mean_irrelevant_rate"] == 0.5 and s["empty_outputs"] == 1


def test_concept_f1_of_two_conceptless_notes_is_undefined():
    from clinitune.evaluate.semantic import concept_f1, mean_defined, note_scores

    assert concept_f1("Seen today.", "Seen today.")["concept_f1"] is None
    empty = concept_f1("Hypertension.", "")
    assert empty["concept_f1"] == 0.0 and empty["concept_precision"] is None
    assert mean_defined([None, 0.5, 1.0]) == 0.75 and mean_defined([None]) is None

    class Spec:
        bertscore = False

    rows, info = note_scores(
        ["Seen today.", "Hypertension."], ["Seen.", "Hypertension."], Spec(), "cpu"
    )
    assert [r["concept_f1"] for r in rows] == [None, 1.0]
    assert info["concept_f1_undefined"] == 1


# ------------------------------------------------------------------ judge replies
def _judge(**kw):
    from clinitune.evaluate.judge import Judge

    return Judge(JudgeSpec(kind="openai", model="stand-in", url="http://127.0.0.1:9/v1",
                           backoff_s=0.0, **kw))  # fmt: skip


def test_empty_claims_for_a_non_empty_text_is_a_malformed_reply(monkeypatch):
    from clinitune.evaluate.judge import JudgeError

    text = "Left knee pain after a fall yesterday."
    j = _judge(retries=1)
    answers = iter(["[]", '["Left knee pain"]'])
    monkeypatch.setattr(j, "_ask_openai", lambda prompt: next(answers))
    assert j.claims(text, "n1/claims") == ["Left knee pain"]
    assert j.calls == 2 and j.retried == 1
    j = _judge(retries=1)
    monkeypatch.setattr(j, "_ask_openai", lambda prompt: '["  "]')
    with pytest.raises(JudgeError, match=r"n2/claims: malformed JSON \(no claims for a text"):
        j.claims(text, "n2/claims")
    assert j.claims("  ", "n3/claims") == []  # an empty text has no claims: no call
    assert j.claims("N/A", "n4/claims") == []  # a few words may assert nothing: accepted


class _CutOff:
    """A response whose body ends early (the server closed the connection mid-answer)."""

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def read(self):
        raise http.client.IncompleteRead(b'{"choices": [', 40)


def test_a_cut_off_answer_is_retried_then_a_clean_error(monkeypatch):
    import urllib.request

    from clinitune.evaluate.judge import JudgeError

    body = json.dumps({"choices": [{"message": {"content": '["Left knee pain"]'}}]}).encode()

    class _Ok(_CutOff):
        def read(self):
            return body

    replies = [_CutOff(), _Ok()]
    monkeypatch.setattr(urllib.request, "urlopen", lambda req, timeout: replies.pop(0))
    j = _judge(retries=2)
    assert j.claims("Left knee pain.", "n1/claims") == ["Left knee pain"]
    assert j.retried == 1
    monkeypatch.setattr(urllib.request, "urlopen", lambda req, timeout: _CutOff())
    with pytest.raises(
        JudgeError, match=r"judge call n2/claims: no complete answer \(IncompleteRead\) after 3"
    ):
        _judge(retries=2).claims("Left knee pain.", "n2/claims")
