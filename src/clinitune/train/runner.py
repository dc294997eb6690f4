"""``clinitune train``: run the recipe's stages in order (cpt -> sft -> task), each starting
from the previous stage's weights.

Built on ``transformers.Trainer`` (accelerate underneath: mixed precision, gradient
accumulation with correct token-count loss scaling, schedulers, FSDP/DeepSpeed via
``accelerate launch``). What clinitune adds is the data side:

- examples are read pre-tokenized from ``prepare``'s shards (tokenize once, never per rank);
- micro-batches are flattened padding-free by transformers' ``DataCollatorWithFlattening``:
  no pad tokens, and position ids restart per example so SDPA / flash-attention build a
  block-diagonal mask -- packed examples never attend to each other;
- labels come from ``prepare`` (-100 on prompts, EOS kept), never recomputed from pad ids.

Each stage writes ``<run>/train/<stage>/model`` (plain HF format: ``from_pretrained`` works),
``train_log.jsonl`` (loss per step) and a manifest.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinitune.data.prepare import token_path
from clinitune.errors import StageError
from clinitune.models import (
    load_model,
    load_tokenizer,
    model_identity,
    pick_device,
    resolve_model,
)
from clinitune.recipe import Recipe, StageSpec
from clinitune.run import (
    RunLayout,
    fingerprint,
    is_up_to_date,
    read_manifest,
    sha256_json,
    write_json,
    write_manifest,
)


@dataclass
class StageResult:
    name: str
    model_dir: Path
    skipped: bool
    summary: dict[str, Any]


def stage_model_dir(layout: RunLayout, stage: str) -> Path:
    return layout.stage(stage) / "model"


def stage_init(recipe: Recipe, layout: RunLayout, index: int) -> tuple[Path, str]:
    """Weights a stage starts from, and the upstream fingerprint that identifies them."""
    if index == 0:
        return resolve_model(recipe.model.name, recipe.model.revision), f"model:{recipe.model.name}"
    prev = recipe.train[index - 1].name
    m = read_manifest(layout.stage(prev))
    if m is None:
        raise StageError(
            f"stage {recipe.train[index].name!r} starts from stage {prev!r}, "
            "which has not been trained: run `clinitune train`"
        )
    return stage_model_dir(layout, prev), m["fingerprint"]


def _prepared_fp(layout: RunLayout) -> str:
    m = read_manifest(layout.prepared)
    if m is None:
        raise StageError(f"{layout.prepared} has no manifest: run `clinitune prepare` first")
    return m["fingerprint"]


def stage_output_identity(layout: RunLayout, stage: str) -> str | None:
    """Identity of a trained stage's weights: the hashes of its output files."""
    m = read_manifest(layout.stage(stage))
    return sha256_json(m["outputs"]) if m else None


def stage_fingerprint(recipe: Recipe, layout: RunLayout, index: int) -> str:
    """Recipe section + prepared data + the exact starting weights (a changed base model
    directory or a retrained previous stage changes it)."""
    st = recipe.train[index]
    upstream = [_prepared_fp(layout)]
    if index == 0:
        base = resolve_model(recipe.model.name, recipe.model.revision)
        upstream.append(f"model:{model_identity(base)}")
    else:
        prev = stage_output_identity(layout, recipe.train[index - 1].name)
        upstream.append(f"stage:{prev or 'missing'}")
    cfg = {
        "stage": st.model_dump(mode="json"),
        "seed": recipe.seed,
        "dtype": recipe.model.dtype,
        "attn": recipe.model.attn_implementation,
    }
    return fingerprint(f"train:{st.name}", cfg, {}, upstream)


def check_stage_current(recipe: Recipe, layout: RunLayout, stage: str) -> None:
    """Stop evaluation of a stage trained with another recipe, data or starting weights."""
    idx = [s.name for s in recipe.train].index(stage)
    m = read_manifest(layout.stage(stage))
    if m is None:
        raise StageError(f"stage {stage!r} has not been trained: run `clinitune train`")
    if m.get("fingerprint") != stage_fingerprint(recipe, layout, idx):
        raise StageError(
            f"stage {stage!r} is out of date (its recipe section, the prepared data or its "
            "starting weights changed since it was trained): run `clinitune train`"
        )


def _load_rows(layout: RunLayout, st: StageSpec, split: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    path = token_path(layout.prepared, split)
    if not path.exists():
        raise StageError(f"{path} not found: run `clinitune prepare` first")
    table = pq.read_table(path, columns=["input_ids", "labels", "seq_lengths", "task", "n_tokens"])
    rows = [r for r in table.to_pylist() if r["task"] in st.tasks]
    if not rows and split == "train":
        raise StageError(f"stage {st.name!r}: no prepared {split} rows for tasks {st.tasks}")
    return rows


class _LossLog:
    """Collects Trainer logs into train_log.jsonl (a TrainerCallback, built lazily)."""

    def __new__(cls, path: Path):  # type: ignore[misc]
        from transformers import TrainerCallback

        class LossLog(TrainerCallback):
            def __init__(self) -> None:
                self.path = path
                self.rows: list[dict[str, Any]] = []
                self.t0 = time.perf_counter()

            def on_log(self, args, state, control, logs=None, **kw):
                if logs is None:
                    return
                row = {
                    "step": state.global_step,
                    "time_s": round(time.perf_counter() - self.t0, 3),
                    **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
                }
                self.rows.append(row)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")

        return LossLog()


class _ProgressBar:
    """A training progress bar with the latest loss (a TrainerCallback, built lazily)."""

    def __new__(cls, stage: str):  # type: ignore[misc]
        from transformers import TrainerCallback

        from clinitune.progress import bar

        class ProgressBar(TrainerCallback):
            def __init__(self) -> None:
                self.pbar: Any = None

            def on_train_begin(self, args, state, control, **kw):
                self.pbar = bar(f"train [{stage}]", total=state.max_steps, unit="step")

            def on_step_end(self, args, state, control, **kw):
                if self.pbar is not None:
                    self.pbar.update(state.global_step - self.pbar.n)

            def on_log(self, args, state, control, logs=None, **kw):
                if self.pbar is not None and logs and "loss" in logs:
                    self.pbar.set_postfix(loss=f"{logs['loss']:.3f}")

            def on_train_end(self, args, state, control, **kw):
                if self.pbar is not None:
                    self.pbar.close()

        return ProgressBar()


def train_stage(
    recipe: Recipe, layout: RunLayout, index: int, *, force: bool = False
) -> StageResult:
    import torch
    from transformers import DataCollatorWithFlattening, Trainer, TrainingArguments, set_seed

    st = recipe.train[index]
    out = layout.stage(st.name)
    fp = stage_fingerprint(recipe, layout, index)
    if not force and is_up_to_date(out, fp):
        m = read_manifest(out) or {}
        return StageResult(st.name, stage_model_dir(layout, st.name), True, m.get("counts", {}))
    init_dir, _ = stage_init(recipe, layout, index)
    _check_tokenizer(layout, init_dir)
    rows = _load_rows(layout, st, "train")

    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    (out / "train_log.jsonl").unlink(missing_ok=True)
    set_seed(recipe.seed)
    device = pick_device()
    model = load_model(
        init_dir, dtype=recipe.model.dtype, attn=recipe.model.attn_implementation, device=device
    )
    tok = load_tokenizer(init_dir)
    disable_kv_cache(model)
    if st.method == "lora":
        from peft import LoraConfig, get_peft_model

        lc = st.lora
        model = get_peft_model(
            model,
            LoraConfig(
                r=lc.r,
                lora_alpha=lc.alpha,
                lora_dropout=lc.dropout,
                target_modules=lc.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    from datasets import Dataset

    ds = Dataset.from_list(
        [
            {"input_ids": r["input_ids"], "labels": r["labels"], "seq_lengths": r["seq_lengths"]}
            for r in rows
        ]
    )
    bf16 = device == "cuda" and model.dtype == torch.bfloat16
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        max_steps=st.max_steps,
        per_device_train_batch_size=st.batch_size,
        gradient_accumulation_steps=st.grad_accum,
        learning_rate=st.learning_rate,
        lr_scheduler_type=st.lr_scheduler,
        warmup_steps=st.warmup_ratio,
        weight_decay=st.weight_decay,
        max_grad_norm=st.max_grad_norm,
        logging_steps=st.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=recipe.seed,
        data_seed=recipe.seed,
        bf16=bf16,
        use_cpu=device == "cpu",
        activation_checkpointing=st.gradient_checkpointing,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    log = _LossLog(out / "train_log.jsonl")
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=SegmentCollator(DataCollatorWithFlattening()),
        callbacks=[log],
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    # Both print every log dict to stdout; our bar shows the loss instead.
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_ProgressBar(st.name))
    t0 = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - t0

    model_dir = stage_model_dir(layout, st.name)
    trained = trainer.model
    if st.method == "lora" and st.merge_lora:
        trained = trained.merge_and_unload()
    trained.config.use_cache = True  # for generation with the saved model
    # Save into a fresh folder and swap it in: files of an earlier run (e.g. a LoRA adapter
    # next to full weights) must never survive into the new model directory.
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".model."))
    trained.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    os.replace(tmp, model_dir)

    losses = [r["loss"] for r in log.rows if "loss" in r]
    tokens_seen = _tokens_seen(rows, st, recipe.seed)
    summary = {
        "steps": result.global_step,
        "train_rows": len(rows),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        # single-step losses are noisy at small batch sizes: compare window means
        "first_loss_mean5": sum(losses[:5]) / len(losses[:5]) if losses else None,
        "last_loss_mean5": sum(losses[-5:]) / len(losses[-5:]) if losses else None,
        "train_runtime_s": round(wall, 2),
        "tokens_seen_estimate": tokens_seen,
        "tokens_per_s_estimate": round(tokens_seen / wall, 1) if wall > 0 else None,
        "params": n_params,
        "trainable_params": n_trainable,
        "device": device,
        "dtype": str(model.dtype),
        "init": str(init_dir),
    }
    write_json(out / "summary.json", summary)
    write_manifest(
        out,
        stage=f"train:{st.name}",
        fp=fp,
        config=st.model_dump(mode="json"),
        inputs={"init": str(init_dir)},
        counts=summary,
        outputs=[*model_dir.glob("*"), out / "train_log.jsonl"],
    )
    return StageResult(st.name, model_dir, False, summary)


class SegmentCollator:
    """Rows packed by ``prepare`` hold several documents (``seq_lengths``). Each is handed to
    ``DataCollatorWithFlattening`` as its own example, which restarts the position ids (so the
    attention mask is block-diagonal) and drops the label of each document's first token (no
    predicting a document from the one before it). Unpacked rows are one segment."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        segments = []
        for f in features:
            start = 0
            for n in f.get("seq_lengths") or [len(f["input_ids"])]:
                end = start + n
                segments.append(
                    {"input_ids": f["input_ids"][start:end], "labels": f["labels"][start:end]}
                )
                start = end
        return self.inner(segments)


def disable_kv_cache(model: Any) -> None:
    """Packed (flattened) batches rely on transformers detecting sequence starts from
    ``position_ids`` and building a block-diagonal mask, which it skips when the model creates
    a KV cache in ``forward`` (``use_cache=True``, most configs' default; transformers 5.23):
    packed examples then silently attend to each other. ``Trainer`` sets
    ``config.use_cache = args.use_cache`` (False by default); we set it too so the guarantee does
    not hang on a Trainer default. ``tests/test_train.py`` pins the behaviour."""
    model.config.use_cache = False


def _tokens_seen(rows: list[dict[str, Any]], st: StageSpec, seed: int) -> int:
    """Expected tokens processed: steps x examples/step x mean example length."""
    mean = sum(r["n_tokens"] for r in rows) / max(len(rows), 1)
    return int(st.max_steps * st.batch_size * st.grad_accum * mean)


def _check_tokenizer(layout: RunLayout, init_dir: Path) -> None:
    m = read_manifest(layout.prepared) or {}
    want = (m.get("tokenizer") or {}).get("vocab_size")
    cfg = json.loads((init_dir / "config.json").read_text())
    have = cfg.get("vocab_size")
    if want and have and want > have:
        raise StageError(
            f"the prepared data was tokenized with a {want}-token vocabulary but the model at "
            f"{init_dir} has {have}: re-run `clinitune prepare` for this model"
        )


def train(recipe: Recipe, layout: RunLayout, *, force: bool = False) -> list[StageResult]:
    if not recipe.train:
        raise StageError("the recipe has no train stages")
    results = []
    for i in range(len(recipe.train)):
        results.append(train_stage(recipe, layout, i, force=force))
        force = force or not results[-1].skipped  # downstream stages must retrain
    return results


def final_model_dir(recipe: Recipe, layout: RunLayout) -> Path:
    if not recipe.train:
        return resolve_model(recipe.model.name, recipe.model.revision)
    return stage_model_dir(layout, recipe.train[-1].name)


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")
