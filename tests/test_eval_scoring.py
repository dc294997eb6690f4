"""Scoring code checked against naive one-example-at-a-time computations on a tiny model."""

import json

import pytest
import torch

from clinitune.errors import DataError
from clinitune.evaluate.heldout import nll_per_example
from clinitune.evaluate.mcq import Question, choice_logprobs, load_questions
from clinitune.recipe import McqSpec, load_recipe


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()


def _naive_nll(model, ids, labels):
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    total, n = 0.0, 0
    for t in range(1, len(ids)):
        if labels[t] != -100:
            total -= float(logp[t - 1, labels[t]])
            n += 1
    return total, n


def test_packed_heldout_equals_separate_forwards(tiny):
    """Packing several examples in one row must not let them attend to each other."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in (17, 40, 9, 33):
        ids = torch.randint(5, 1000, (n,), generator=g).tolist()
        labels = [-100] * (n // 2) + ids[n // 2 :]
        rows.append({"input_ids": ids, "labels": labels})
    packed = nll_per_example(tiny, rows, "cpu", "t")
    for r, (s, n) in zip(rows, packed, strict=True):
        s2, n2 = _naive_nll(tiny, r["input_ids"], r["labels"])
        assert n == n2
        assert abs(s - s2) < 1e-3 * max(1.0, abs(s2))


def test_choice_scoring_matches_naive(tiny, tokenizer):
    qs = [
        Question("a", "Question: is aspirin an NSAID?\nAnswer:", (" yes", " no", " maybe"), 0),
        Question(
            "b", "Pick one:", (" left lower lobe pneumonia", " right", " bilateral infiltrates"), 2
        ),
        Question(
            "c",
            "The following are multiple choice questions.\nAnswer:",
            (" A", " B", " C", " D"),
            1,
        ),
    ]
    got = choice_logprobs(tiny, tokenizer, qs, "cpu", batch_size=3, desc="t")
    for q, lps in zip(qs, got, strict=True):
        ctx = tokenizer(q.context, add_special_tokens=False)["input_ids"]
        for c, lp in zip(q.choices, lps, strict=True):
            cont = tokenizer(c, add_special_tokens=False)["input_ids"]
            ids = ctx + cont
            with torch.inference_mode():
                logp = torch.log_softmax(tiny(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            ref = sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
            assert abs(lp - ref) < 1e-3, (q.qid, c, lp, ref)


def test_bundled_mcq_files_load_and_sample_is_seeded():
    r = load_recipe("quickstart")
    spec = McqSpec(
        name="m", path="pkg://samples/mcq/mmlu_medical_test.csv", format="mmlu_csv", n=10
    )
    a = load_questions(spec, r.resolve_path(spec.path), seed=0)
    b = load_questions(spec, r.resolve_path(spec.path), seed=0)
    c = load_questions(spec, r.resolve_path(spec.path), seed=1)
    assert [q.qid for q in a] == [q.qid for q in b] != [q.qid for q in c]
    assert len(a) == 10 and all(q.context.endswith("Answer:") for q in a)
    spec = McqSpec(name="p", path="pkg://samples/mcq/pubmedqa_sample.json", format="pubmedqa_json")
    qs = load_questions(spec, r.resolve_path(spec.path), seed=0)
    assert len(qs) == 60 and {q.answer for q in qs} <= {0, 1, 2}


def test_bad_benchmark_files_name_file_and_row(tmp_path):
    p = tmp_path / "bad_test.csv"
    p.write_text("q,a,b,c,d,E\n")
    with pytest.raises(DataError, match=r"bad_test\.csv: row 1: answer 'E'"):
        load_questions(McqSpec(name="x", path=str(p), format="mmlu_csv"), p, 0)
    p = tmp_path / "m.jsonl"
    p.write_text(
        json.dumps({"question": "q", "opa": 1, "opb": 2, "opc": 3, "opd": 4, "cop": 0}) + "\n"
    )
    with pytest.raises(DataError, match=r"m\.jsonl: line 1: cop=0 is not 1-4"):
        load_questions(McqSpec(name="x", path=str(p), format="medmcqa_jsonl"), p, 0)
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"1": {"QUESTION": "q", "CONTEXTS": []}}))
    with pytest.raises(DataError, match="item 1: missing field 'final_decision'"):
        load_questions(McqSpec(name="x", path=str(p), format="pubmedqa_json"), p, 0)


def test_medmcqa_shared_dev_loads(shared_data):
    p = shared_data / "medmcqa" / "dev.jsonl"
    qs = load_questions(McqSpec(name="m", path=str(p), format="medmcqa_jsonl", n=50), p, 0)
    assert len(qs) == 50 and all(0 <= q.answer < 4 for q in qs)
