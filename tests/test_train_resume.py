"""Checkpoints and resume (SIGKILL mid-run), in-training evaluation, RoPE scaling, balanced
sampling, loggers."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from clinitune.data.prepare import prepare
from clinitune.errors import StageError
from clinitune.recipe import load_recipe
from clinitune.run import RunLayout
from clinitune.train.runner import train


def _recipe(tmp_path, model_dir, run, extra=()):
    return load_recipe(
        "quickstart",
        [
            f"model.name={model_dir}",
            f"run_dir={tmp_path / run}",
            "data.sources.aci.limit=6",
            "data.sources.mts.limit=40",
            "data.max_seq_len=256",
            "train.sft.batch_size=2",
            "train.sft.warmup_ratio=0.0",
            *extra,
        ],
    )


def _losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, path.read_text().splitlines())
            if "loss" in r}  # fmt: skip


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_model_dir):
    extra = ["train.sft.max_steps=60", "train.sft.save_steps=4", "train.sft.save_total_limit=2"]
    ref = _recipe(tmp_path, tiny_model_dir, "ref", extra)
    ref_layout = RunLayout(ref.run_path)
    prepare(ref, ref_layout)
    train(ref, ref_layout)
    want = _losses(ref_layout.stage("sft") / "train_log.jsonl")

    r = _recipe(tmp_path, tiny_model_dir, "killed", extra)
    layout = RunLayout(r.run_path)
    shutil.copytree(ref_layout.prepared, layout.prepared)
    cmd = [sys.executable, "-m", "clinitune", "train", "quickstart", "--run-dir",
           str(layout.root), "--model", str(tiny_model_dir)]  # fmt: skip
    for o in [
        "data.sources.aci.limit=6", "data.sources.mts.limit=40", "data.max_seq_len=256",
        "train.sft.batch_size=2", "train.sft.warmup_ratio=0.0", *extra,
    ]:  # fmt: skip
        cmd += ["--set", o]
    env = {**os.environ, "CLINITUNE_PROGRESS": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = layout.stage("sft") / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (ckpts / "checkpoint-12" / "trainer_state.json").exists():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (layout.stage("sft") / "manifest.json").exists(), "killed before the end"

    (res,) = train(r, layout, resume=True)
    start = res.summary["resumed_from_step"]
    assert start is not None and 12 <= start < 60
    got = _losses(layout.stage("sft") / "train_log.jsonl")
    assert sorted(got) == sorted(want) == list(range(1, 61))
    for step in range(1, 61):
        assert got[step] == pytest.approx(want[step], rel=1e-4, abs=1e-5), step
    assert len(list(ckpts.glob("checkpoint-*"))) <= 2  # last K kept


def test_resume_refuses_checkpoints_of_another_recipe(tmp_path, tiny_model_dir):
    steps = ["train.sft.max_steps=2", "train.sft.save_steps=1"]
    r = _recipe(tmp_path, tiny_model_dir, "run", steps)
    layout = RunLayout(r.run_path)
    prepare(r, layout)
    train(r, layout)
    (layout.stage("sft") / "manifest.json").unlink()  # as if interrupted
    r2 = _recipe(tmp_path, tiny_model_dir, "run", [*steps, "train.sft.learning_rate=1e-3"])
    with pytest.raises(StageError, match="different recipe"):
        train(r2, layout, resume=True)


def test_in_training_eval_early_stopping_and_tensorboard(tmp_path, tiny_model_dir):
    r = _recipe(
        tmp_path,
        tiny_model_dir,
        "run",
        [
            "train.sft.max_steps=6",
            "train.sft.eval_steps=2",
            "train.sft.eval_max_examples=8",
            "train.sft.early_stopping_patience=5",
            "data.split.valid=0.3",
        ],
    )
    layout = RunLayout(r.run_path)
    prepare(r, layout)
    (res,) = train(r, layout)
    log = (layout.stage("sft") / "train_log.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in log]
    # every eval_steps, plus the final evaluation of the returned (best) model
    assert [x["step"] for x in rows if "eval_loss" in x] == [2, 4, 6, 6]
    s = res.summary
    assert s["eval_rows"] == 8 and s["eval_loss"] > 0
    assert s["eval_perplexity"] == pytest.approx(2.718281828 ** s["eval_loss"], rel=1e-6)
    assert s["best_checkpoint"] is not None
    assert list((layout.stage("sft") / "tensorboard").glob("events.out.tfevents.*"))
    m = json.loads((layout.stage("sft") / "manifest.json").read_text())
    assert m["hardware"]["device"] == "cpu" and "recipe" in m and "prepared_fingerprint" in m


def _short_window_model(tmp_path, tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    out = tmp_path / "short"
    LlamaForCausalLM(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize("kind", ["linear", "yarn"])
def test_rope_scaling_trains_beyond_the_original_window(tmp_path, tokenizer, kind):
    from transformers import AutoModelForCausalLM

    model_dir = _short_window_model(tmp_path, tokenizer)
    base = ["data.max_seq_len=256", "train.sft.max_steps=2"]
    base = [f"model.name={model_dir}", f"run_dir={tmp_path / 'run'}", *base]
    base += ["data.sources.aci.limit=6", "data.sources.mts.limit=20"]
    r = load_recipe("quickstart", base)
    layout = RunLayout(r.run_path)
    prepare(r, layout)
    with pytest.raises(StageError, match=r"takes 128: set model.rope_scaling"):
        train(r, layout)
    rope = [f"model.rope_scaling.type={kind}", "model.rope_scaling.factor=2"]
    r = load_recipe("quickstart", [*base, *rope])
    (res,) = train(r, layout)
    rows_longer = res.summary["max_position_embeddings"] == 256
    assert rows_longer and res.summary["rope_parameters"]["rope_type"] == kind
    m = AutoModelForCausalLM.from_pretrained(res.model_dir)  # plain transformers loads it
    assert m.config.rope_parameters["factor"] == 2.0
    import torch

    with torch.no_grad():
        out = m(input_ids=torch.randint(5, 1000, (1, 250)), labels=torch.randint(5, 1000, (1, 250)))
    assert torch.isfinite(out.loss)


def test_class_balanced_sampler_draws_labels_equally():
    from collections import Counter

    from datasets import Dataset
    from transformers import TrainingArguments

    from clinitune.train.runner import _trainer_class

    rows = [{"input_ids": [1, 2, 3], "labels": [-100, -100, 7]} for _ in range(90)]
    rows += [{"input_ids": [1, 2, 4], "labels": [-100, -100, 8]} for _ in range(10)]
    ds = Dataset.from_list(rows)
    cls = _trainer_class(True)
    trainer = cls.__new__(cls)
    trainer.train_dataset = ds
    trainer.args = TrainingArguments(output_dir="/tmp/unused", seed=3, data_seed=3, use_cpu=True)
    drawn = Counter(ds[i]["labels"][-1] for i in trainer._get_train_sampler())
    assert abs(drawn[7] - drawn[8]) < 25 and sum(drawn.values()) == 100


def test_too_little_memory_is_refused_before_loading(tmp_path, tiny_model_dir, monkeypatch):
    from clinitune.train import runner

    assert runner._param_count(tiny_model_dir) > 3_000_000  # embeddings of a 49k vocabulary
    monkeypatch.setattr(runner, "_available_memory", lambda device: 10 * 2**20)
    r = _recipe(tmp_path, tiny_model_dir, "run", ["train.sft.max_steps=1"])
    layout = RunLayout(r.run_path)
    prepare(r, layout)
    with pytest.raises(StageError, match=r"need at least .* GiB .* but 0.0 GiB is free"):
        train(r, layout)
    assert not (layout.stage("sft") / "model").exists()
