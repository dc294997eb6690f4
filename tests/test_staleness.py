"""`run` must never reuse outputs that no longer match the recipe, data or weights."""

import json

import pytest

from clinitune.data.prepare import prepare
from clinitune.errors import ClinituneError, RecipeError, StageError
from clinitune.evaluate.suite import evaluate
from clinitune.generate import resolve_eval_models
from clinitune.recipe import load_recipe
from clinitune.run import RunLayout
from clinitune.train.runner import train

BASE = [
    "data.sources.aci.limit=6",
    "data.sources.mts.limit=30",
    "data.max_seq_len=256",
    "train.sft.max_steps=2",
    "train.sft.batch_size=2",
    "evaluate.held_out.max_examples=2",
    "evaluate.generation.enabled=false",
    "evaluate.mcq.0.n=4",
]


def _setup(tmp_path, tiny_model_dir, extra=()):
    r = load_recipe(
        "quickstart", [f"model.name={tiny_model_dir}", f"run_dir={tmp_path / 'run'}", *BASE, *extra]
    )
    layout = RunLayout(r.run_path)
    prepare(r, layout)
    return r, layout


def test_evaluate_refuses_a_stage_trained_on_other_data(tmp_path, tiny_model_dir):
    r, layout = _setup(tmp_path, tiny_model_dir)
    train(r, layout)
    evaluate(r, layout)
    r2, _ = _setup(tmp_path, tiny_model_dir, ["data.split.salt=reshuffled"])
    with pytest.raises(StageError, match="'sft' is out of date"):
        evaluate(r2, layout)
    train(r2, layout)  # retrained on the new split: evaluation works again
    assert not evaluate(r2, layout).skipped


def test_changed_benchmark_file_reruns_evaluation(tmp_path, tiny_model_dir):
    import shutil

    bench = tmp_path / "mmlu.csv"
    shutil.copy(
        load_recipe("quickstart").resolve_path("pkg://samples/mcq/mmlu_medical_test.csv"), bench
    )
    r, layout = _setup(tmp_path, tiny_model_dir, [f"evaluate.mcq.0.path={bench}"])
    train(r, layout)
    assert not evaluate(r, layout).skipped
    assert evaluate(r, layout).skipped
    with open(bench, "a") as f:
        f.write("Extra question?,a,b,c,d,B,anatomy\n")
    assert not evaluate(r, layout).skipped


def test_retraining_lora_then_full_leaves_no_stale_adapter(tmp_path, tiny_model_dir):
    r, layout = _setup(
        tmp_path, tiny_model_dir, ["train.sft.method=lora", "train.sft.merge_lora=false"]
    )
    (res,) = train(r, layout)
    assert (res.model_dir / "adapter_config.json").exists()
    r2, _ = _setup(tmp_path, tiny_model_dir)
    (res2,) = train(r2, layout)
    assert not (res2.model_dir / "adapter_config.json").exists()
    assert (res2.model_dir / "model.safetensors").exists()


def test_duplicate_model_labels_are_rejected(tmp_path, tiny_model_dir):
    r, layout = _setup(tmp_path, tiny_model_dir)
    (res,) = train(r, layout)
    r2 = load_recipe(
        "quickstart",
        [
            f"model.name={tiny_model_dir}",
            f"run_dir={tmp_path / 'run'}",
            *BASE,
            f"evaluate.models=[base, {res.model_dir}, {res.model_dir}]",
        ],
    )
    with pytest.raises(StageError, match="both be labelled"):
        resolve_eval_models(r2, layout)


def test_unmerged_adapter_only_on_last_stage():
    with pytest.raises(RecipeError, match="only the last stage can keep an unmerged adapter"):
        load_recipe("heal_soap", ["train.cpt.method=lora", "train.cpt.merge_lora=false"])


def test_mdm_input_cannot_be_a_target():
    with pytest.raises(RecipeError, match="both an input and a target"):
        load_recipe("quickstart", ["data.tasks.assessment_plan.inputs=[hpi, plan]"])


def test_metrics_json_has_no_note_text(tmp_path, tiny_model_dir):
    r, layout = _setup(tmp_path, tiny_model_dir)
    train(r, layout)
    metrics = layout.metrics
    evaluate(r, layout)
    text = metrics.read_text()
    rec = json.loads((layout.prepared / "records" / "test.jsonl").read_text().splitlines()[0])
    assert rec["completion"][:30] not in text and rec["input"][:30] not in text


def test_eval_models_take_hub_ids_and_embedded_names(tmp_path, monkeypatch):
    """evaluate.models entries beyond base/final/stages/paths: an embedded name resolves like
    model.name does; a hub id absent from the offline cache is a clear error, not a traceback."""
    import clinitune.generate as g

    monkeypatch.setattr(g, "resolve_model", lambda name, revision=None: tmp_path / name)
    r = load_recipe("quickstart", [f"run_dir={tmp_path / 'run'}"])
    layout = RunLayout(r.run_path)
    monkeypatch.setattr(g, "model_identity", lambda path: "id")
    ref = g.resolve_eval_model(r, layout, "smollm2-135m-instruct")
    assert ref.path == tmp_path / "smollm2-135m-instruct" and ref.label == "smollm2-135m-instruct"
    monkeypatch.undo()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ClinituneError, match="not in the local Hugging Face cache"):
        g.resolve_eval_model(r, layout, "nosuchorg/nosuchmodel-xyz")
    with pytest.raises(StageError, match="not a model directory"):
        g.resolve_eval_model(r, layout, str(tmp_path))
    with pytest.raises(RecipeError, match="hub id"):
        load_recipe("quickstart", ["evaluate.models=[base, nosuchthing]"])
