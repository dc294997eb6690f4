"""clinitune's multiple-choice scorer agrees with lm-evaluation-harness on the same model, data
and prompt: per-choice log-likelihoods, acc and acc_norm (the issue's parity requirement).

lm-eval runs in-process on the already-loaded model (``HFLM(pretrained=model)``) with a task
defined as data over a local JSONL file; nothing is downloaded."""

import json

import pytest

from clinitune.data.pack import ChatFormatter
from clinitune.evaluate.mcq import choice_logprobs, load_questions, with_prompts
from clinitune.recipe import PKG_PREFIX, McqSpec, resolve_path

lm_eval = pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()


def _lm_eval_run(model, tokenizer, questions, path, delimiter):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with open(path, "w", encoding="utf-8") as f:
        for q in questions:
            choices = [c[len(delimiter) :] for c in q.choices]
            doc = {"qid": q.qid, "context": q.context, "choices": choices, "label": q.answer}
            f.write(json.dumps(doc) + "\n")
    task = {
        "task": "clinitune_parity",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "target_delimiter": delimiter,
        "num_fewshot": 0,
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4)
    res = simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=TaskManager(include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
    )
    samples = sorted(res["samples"]["clinitune_parity"], key=lambda s: s["doc_id"])
    lls = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    return res["results"]["clinitune_parity"], lls


@pytest.mark.parametrize(
    "fmt,file,n,shots,chat",
    [
        ("mmlu_csv", "mcq/mmlu_medical_test.csv", 24, 0, False),
        ("pubmedqa_json", "mcq/pubmedqa_sample.json", 8, 0, False),
        ("mmlu_csv", "mcq/mmlu_medical_test.csv", 8, 2, True),
    ],
)
def test_accuracy_equals_lm_eval(tmp_path, tiny, tokenizer, monkeypatch, fmt, file, n, shots, chat):
    """The same prompts (zero-shot; two-shot through the chat template) scored by both."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    spec = McqSpec(name="parity", path=f"{PKG_PREFIX}samples/{file}", format=fmt, n=n,
                   num_fewshot=shots, chat_template=chat)  # fmt: skip
    path = resolve_path(spec.path, tmp_path)
    pool = load_questions(spec.model_copy(update={"n": None}), path, seed=0)
    qs = with_prompts(spec, load_questions(spec, path, seed=0), pool, 0,
                      ChatFormatter(tokenizer) if chat else None)  # fmt: skip
    ours = choice_logprobs(tiny, tokenizer, qs, "cpu", batch_size=4, desc="t")
    delimiter = "" if chat else " "
    results, theirs = _lm_eval_run(tiny, tokenizer, qs, tmp_path / "docs.jsonl", delimiter)
    for a, b in zip(ours, theirs, strict=True):
        assert a == pytest.approx(b, abs=2e-4)
    acc = sum(
        max(range(len(lp)), key=lp.__getitem__) == q.answer for q, lp in zip(qs, ours, strict=True)
    )
    norm = [
        max(range(len(lp)), key=lambda j, lp=lp, q=q: lp[j] / len(q.choices[j].removeprefix(" ")))
        == q.answer
        for q, lp in zip(qs, ours, strict=True)
    ]
    assert acc / len(qs) == pytest.approx(results["acc,none"])
    assert sum(norm) / len(qs) == pytest.approx(results["acc_norm,none"])


def test_prompts_match_lm_eval_task_definitions(tmp_path):
    """Each format's prompt is the one lm-eval's own task builds from the same item (its
    ``doc_to_text``), so a drift on either side fails here, not only in the scores."""
    import importlib
    import importlib.resources

    import jinja2
    import yaml

    from clinitune.evaluate.mcq import LOADERS

    tasks = importlib.resources.files("lm_eval") / "tasks"
    ctxs = ["First abstract sentence.", "Second context, with a result."]
    (tmp_path / "p.json").write_text(
        json.dumps({"1": {"QUESTION": "Does X work?", "CONTEXTS": ctxs, "final_decision": "no"}})
    )
    pubmed = importlib.import_module("lm_eval.tasks.pubmedqa.preprocess_pubmedqa")
    (q,) = LOADERS["pubmedqa_json"](tmp_path / "p.json")
    assert q.context == pubmed.doc_to_text({"CONTEXTS": ctxs, "QUESTION": "Does X work?"})

    opts = {"A": "aspirin", "B": "heparin", "C": "warfarin", "D": "none"}
    (tmp_path / "q.jsonl").write_text(
        json.dumps({"question": "Which drug?", "options": opts, "answer_idx": "B"}) + "\n"
    )
    medqa = importlib.import_module("lm_eval.tasks.medqa.preprocess_medqa")
    (q,) = LOADERS["medqa_jsonl"](tmp_path / "q.jsonl")
    doc = {"sent1": "Which drug?", **{f"ending{i}": v for i, v in enumerate(opts.values())}}
    assert q.context == medqa.doc_to_text(doc) and q.answer == 1

    mc = {"question": "Which nerve?", "opa": "ulnar", "opb": "radial", "opc": "median",
          "opd": "axillary", "cop": 3}  # fmt: skip
    (tmp_path / "m.jsonl").write_text(json.dumps(mc) + "\n")
    medmcqa = importlib.import_module("lm_eval.tasks.medmcqa.utils_medmcqa")
    (q,) = LOADERS["medmcqa_jsonl"](tmp_path / "m.jsonl")
    assert q.context == medmcqa.doc_to_text(mc) and q.answer == 2

    (tmp_path / "anatomy_test.csv").write_text("Which bone?,femur,tibia,ulna,skull,C\n")
    (q,) = LOADERS["mmlu_csv"](tmp_path / "anatomy_test.csv")
    tpl = yaml.safe_load((tasks / "mmlu" / "default" / "_default_template_yaml").read_text())
    sub = yaml.safe_load((tasks / "mmlu" / "default" / "mmlu_anatomy.yaml").read_text())
    doc = {"question": "Which bone?", "choices": ["femur", "tibia", "ulna", "skull"]}
    assert q.context == jinja2.Template(tpl["doc_to_text"]).render(**doc)
    assert q.description == sub["description"] and q.answer == 2
