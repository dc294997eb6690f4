"""Scoring code checked against naive one-example-at-a-time computations on a tiny model."""

import json

import pytest
import torch

from clinitune.errors import DataError
from clinitune.evaluate.heldout import nll_per_example
from clinitune.evaluate.mcq import Question, choice_logprobs, load_questions, with_prompts
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


MEDQA = {
    "question": "A 45-year-old man has crushing chest pain. Which enzyme rises first?",
    "answer": "Myoglobin",
    "options": {"A": "Troponin I", "B": "Myoglobin", "C": "CK-MB", "D": "LDH"},
    "meta_info": "step2&3",
    "answer_idx": "B",
}


def test_medqa_jsonl_loads_and_bad_keys_name_the_line(tmp_path):
    p = tmp_path / "medqa_test.jsonl"
    p.write_text(json.dumps(MEDQA) + "\n" + json.dumps({**MEDQA, "answer_idx": "D",
                 "answer": "LDH"}) + "\n")  # fmt: skip
    qs = load_questions(McqSpec(name="medqa", path=str(p), format="medqa_jsonl"), p, 0)
    assert [q.answer for q in qs] == [1, 3] and qs[0].choices == (" A", " B", " C", " D")
    assert (
        qs[0].context.startswith("Question: A 45-year-old") and "\nB. Myoglobin\n" in qs[0].context
    )
    assert qs[0].context.endswith("Answer:")
    for bad, msg in [
        ({**MEDQA, "answer_idx": "E"}, r"line 1: answer_idx 'E' is not one of the options"),
        ({**MEDQA, "answer": "CK-MB"}, r"line 1: answer text differs"),
        ({k: v for k, v in MEDQA.items() if k != "options"}, r"line 1: missing field 'options'"),
    ]:
        p.write_text(json.dumps(bad) + "\n")
        with pytest.raises(DataError, match=msg):
            load_questions(McqSpec(name="x", path=str(p), format="medqa_jsonl"), p, 0)


def test_fewshot_prompt_has_solved_examples_and_never_the_question(tokenizer):
    from clinitune.data.pack import ChatFormatter

    r = load_recipe("quickstart")
    spec = McqSpec(name="m", path="pkg://samples/mcq/mmlu_medical_test.csv", format="mmlu_csv",
                   n=5, num_fewshot=2)  # fmt: skip
    pool = load_questions(spec.model_copy(update={"n": None}), r.resolve_path(spec.path), 0)
    qs = load_questions(spec, r.resolve_path(spec.path), seed=0)
    shot = with_prompts(spec, qs, pool, seed=0)
    for q, s in zip(qs, shot, strict=True):
        assert s.context.startswith(q.description) and s.context.endswith(q.context)
        body = s.context[len(q.description) : -len(q.context)]
        blocks = body.split("\n\n")[:-1]
        assert len(blocks) == 2
        for b in blocks:
            assert b[-2:] in (" A", " B", " C", " D") and "Answer: " in b  # solved
            assert b[: -len(" A")] != q.context  # never the question itself
    assert with_prompts(spec, qs, pool, seed=0) == shot  # seeded
    chat = with_prompts(spec.model_copy(update={"num_fewshot": 0}), qs, pool, 0,
                        ChatFormatter(tokenizer))  # fmt: skip
    assert chat[0].choices == ("A", "B", "C", "D")
    assert "<|im_start|>user" in chat[0].context and chat[0].context.endswith("assistant\n")


@pytest.mark.parametrize("window,stride", [(8, 4), (8, 8), (16, 5), (64, 32)])
def test_sliding_window_scores_every_token_once_with_context(tiny, window, stride):
    """Windows equal a naive loop: each token after the first is scored once, conditioned on
    the window's tokens before it; a document that fits the window is one plain forward."""
    from clinitune.evaluate.heldout import nll_per_example
    from clinitune.evaluate.perplexity import windows

    g = torch.Generator().manual_seed(window + stride)
    ids = torch.randint(5, 1000, (37,), generator=g).tolist()
    rows = windows(ids, window, stride)
    scored = [t for r in rows for t, lab in zip(r["input_ids"], r["labels"], strict=True)
              if lab != -100]  # fmt: skip
    assert scored == ids[1:] and all(len(r["input_ids"]) <= window for r in rows)
    nll = nll_per_example(tiny, rows, "cpu", "t")
    assert sum(n for _, n in nll) == len(ids) - 1  # every labelled token has context
    got = sum(s for s, _ in nll)
    # naive: token t is predicted from the window that scores it
    want, prev_end, begin = 0.0, 1, 0
    while prev_end < len(ids):
        end = min(begin + window, len(ids))
        with torch.inference_mode():
            lp = torch.log_softmax(tiny(input_ids=torch.tensor([ids[begin:end]])).logits[0], -1)
        for t in range(prev_end, end):
            want -= float(lp[t - begin - 1, ids[t]])
        prev_end = end
        begin = min(begin + stride, prev_end - 1)
    assert got == pytest.approx(want, rel=1e-4)
    if window >= len(ids):
        assert len(rows) == 1
        s, n = _naive_nll(tiny, ids, ids)
        assert got == pytest.approx(s, rel=1e-4) and n == len(ids) - 1


def test_mmlu_fewshot_comes_from_the_subject_dev_questions_in_file_order():
    """As lm-eval's MMLU tasks: 5 shots = the subject's 5 dev questions, first to last."""
    from clinitune.evaluate.mcq import _load, load_questions, with_prompts

    r = load_recipe("heal_soap")
    spec = next(m for m in r.evaluate.mcq if m.name == "mmlu_general")
    spec = spec.model_copy(update={"num_fewshot": 5, "n": 12})
    qs = load_questions(spec, r.resolve_path(spec.path), 0)
    pool = _load(spec, r.resolve_path(spec.fewshot_path))
    for q, p in zip(qs, with_prompts(spec, qs, pool, 0), strict=True):
        dev = [x for x in pool if x.group == q.group]
        assert len(dev) == 5 and p.group == q.group
        shots = "".join(f"{e.context}{e.choices[e.answer]}\n\n" for e in dev)
        assert p.context == q.description + shots + q.context
    assert len({q.group for q in qs}) > 1


def test_mmlu_original_six_column_files_take_the_subject_from_the_file_name(tmp_path):
    from clinitune.evaluate.mcq import _load, with_prompts

    row = "Which bone {}?,femur,tibia,ulna,skull,{}\n"
    (tmp_path / "anatomy_test.csv").write_text(row.format(1, "C"))
    (tmp_path / "anatomy_dev.csv").write_text(row.format(2, "A") + row.format(3, "B"))
    spec = McqSpec(name="m", path=str(tmp_path / "anatomy_test.csv"), format="mmlu_csv",
                   num_fewshot=2, fewshot_path=str(tmp_path / "anatomy_dev.csv"))  # fmt: skip
    qs, pool = _load(spec, tmp_path / "anatomy_test.csv"), _load(spec, tmp_path / "anatomy_dev.csv")
    assert qs[0].group == pool[0].group == "anatomy"
    (p,) = with_prompts(spec, qs, pool, 0)
    assert p.context.count("Answer:") == 3 and "about anatomy" in p.context
