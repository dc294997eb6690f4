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
    resolve_dtype,
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
                self.t0 = time.perf_counter()

            def on_log(self, args, state, control, logs=None, **kw):
                if logs is None or not state.is_world_process_zero:
                    return  # under accelerate launch / torchrun every rank gets the same logs
                row = {
                    "step": state.global_step,
                    "time_s": round(time.perf_counter() - self.t0, 3),
                    **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
                }
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
                if not state.is_world_process_zero:
                    return
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
    recipe: Recipe,
    layout: RunLayout,
    index: int,
    *,
    force: bool = False,
    resume: bool = False,
) -> StageResult:
    import torch
    from transformers import (
        DataCollatorWithFlattening,
        EarlyStoppingCallback,
        TrainingArguments,
        set_seed,
    )

    st = recipe.train[index]
    out = layout.stage(st.name)
    fp = stage_fingerprint(recipe, layout, index)
    if not force and is_up_to_date(out, fp):
        m = read_manifest(out) or {}
        return StageResult(st.name, stage_model_dir(layout, st.name), True, m.get("counts", {}))
    init_dir, _ = stage_init(recipe, layout, index)
    _check_tokenizer(layout, init_dir)
    rows = _load_rows(layout, st, "train")
    rope = recipe.model.rope_scaling if index == 0 else None
    _check_window(init_dir, rope, rows)
    _check_memory(init_dir, st, recipe.model.dtype)
    eval_rows = _eval_rows(layout, st, recipe.seed)

    # Under `accelerate launch` / `torchrun` this function runs once per rank (WORLD_SIZE > 1):
    # only the main process (RANK 0) changes files; the others read. The run directory must be
    # on a filesystem every node sees (sharded checkpoints hold one file per rank).
    world = int(os.environ.get("WORLD_SIZE", "1"))
    main = int(os.environ.get("RANK", "0")) == 0
    ckpt_dir = out / "checkpoints"
    checkpoint = _resume_point(ckpt_dir, fp, prune=main) if resume else None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").unlink(missing_ok=True)
        if checkpoint is None:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            shutil.rmtree(out / "tensorboard", ignore_errors=True)
            (out / "train_log.jsonl").unlink(missing_ok=True)
        else:
            _truncate_log(out / "train_log.jsonl", _checkpoint_step(checkpoint))
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / "FINGERPRINT").write_text(fp)
    set_seed(recipe.seed)
    device = pick_device()
    dtype = str(resolve_dtype(recipe.model.dtype, device)).removeprefix("torch.")

    def build() -> Any:
        # Distributed: every rank loads the full model into CPU RAM and FSDP / DeepSpeed shard it
        # onto this rank's GPU (DDP: the Trainer moves it to cuda:LOCAL_RANK); `.to("cuda")`
        # here would put every rank's copy on GPU 0.
        m = load_model(
            init_dir,
            dtype=dtype,
            attn=recipe.model.attn_implementation,
            device="cpu" if world > 1 else device,
            rope=rope,
        )
        disable_kv_cache(m)
        if st.method == "lora":
            from peft import LoraConfig, get_peft_model

            lc = st.lora
            m = get_peft_model(
                m,
                LoraConfig(
                    r=lc.r,
                    lora_alpha=lc.alpha,
                    lora_dropout=lc.dropout,
                    target_modules=lc.target_modules,
                    task_type="CAUSAL_LM",
                ),
            )
        return m

    model = build()
    tok = load_tokenizer(init_dir)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    ds = _dataset(rows)
    eval_ds = _dataset(eval_rows) if eval_rows else None
    bf16 = device == "cuda" and model.dtype == torch.bfloat16
    report_to = _loggers(st.report_to)
    evaluating = eval_ds is not None and st.eval_steps is not None
    save_steps = st.save_steps
    if st.early_stopping_patience is not None and evaluating:
        save_steps = st.eval_steps  # the best checkpoint must exist to be restored
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        max_steps=st.max_steps,
        per_device_train_batch_size=st.batch_size,
        per_device_eval_batch_size=st.batch_size,
        gradient_accumulation_steps=st.grad_accum,
        learning_rate=st.learning_rate,
        lr_scheduler_type=st.lr_scheduler,
        warmup_steps=st.warmup_ratio,
        weight_decay=st.weight_decay,
        max_grad_norm=st.max_grad_norm,
        logging_steps=st.logging_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=st.save_total_limit,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=st.eval_steps,
        load_best_model_at_end=st.early_stopping_patience is not None and evaluating,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        report_to=[x for x in report_to if x != "tensorboard"] or "none",
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
    callbacks: list[Any] = [log]
    if "tensorboard" in report_to:  # our own writer: events under train/<stage>/tensorboard
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(str(out / "tensorboard"))))
    if st.early_stopping_patience is not None and evaluating:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=st.early_stopping_patience))
    trainer = _trainer_class(st.class_balanced)(
        model=model,
        args=args,
        train_dataset=ds,
        eval_dataset=eval_ds,
        data_collator=SegmentCollator(DataCollatorWithFlattening()),
        callbacks=callbacks,
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    # Both print every log dict to stdout; our bar shows the loss instead.
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_ProgressBar(st.name))
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    wall = time.perf_counter() - t0
    final_eval = trainer.evaluate() if eval_ds is not None else {}

    model_dir = stage_model_dir(layout, st.name)
    acc = trainer.accelerator
    trained = trainer.model
    if acc.num_processes > 1:
        # FSDP / ZeRO-3 parameters are shards (`save_pretrained` on them fails or writes shards):
        # gather one full state dict -- a collective, every rank calls it; it lands on rank 0 --
        # and load it into a plain copy of the model there.
        trained = _gathered_copy(trainer, build) if acc.is_main_process else None
        if trained is None:
            acc.get_state_dict(trainer.model_wrapped)  # this rank's part of the gather
    if trained is not None:
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

    log_rows = _read_log(out / "train_log.jsonl")
    losses = [r["loss"] for r in log_rows if "loss" in r]
    tokens_seen = _tokens_seen(rows, st, recipe.seed)
    eval_loss = final_eval.get("eval_loss")
    summary = {
        "steps": result.global_step,
        "resumed_from_step": _checkpoint_step(checkpoint) if checkpoint else None,
        "train_rows": len(rows),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        # single-step losses are noisy at small batch sizes: compare window means
        "first_loss_mean5": sum(losses[:5]) / len(losses[:5]) if losses else None,
        "last_loss_mean5": sum(losses[-5:]) / len(losses[-5:]) if losses else None,
        "eval_rows": len(eval_rows),
        "eval_loss": eval_loss,
        "eval_perplexity": perplexity(eval_loss) if eval_loss is not None else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_runtime_s": round(wall, 2),
        "tokens_seen_estimate": tokens_seen * acc.num_processes,  # every rank sees its own batch
        "world_size": acc.num_processes,
        "tokens_per_s_estimate": (
            round(tokens_seen * acc.num_processes / wall, 1) if wall > 0 else None
        ),
        "params": n_params,
        "trainable_params": n_trainable,
        "device": device,
        "dtype": str(model.dtype),
        "max_position_embeddings": model.config.max_position_embeddings,
        "rope_parameters": getattr(model.config, "rope_parameters", None),
        "init": str(init_dir),
    }
    if not acc.is_main_process:
        acc.wait_for_everyone()  # the next stage reads this stage's manifest and model
        return StageResult(st.name, model_dir, False, summary)
    write_json(out / "summary.json", summary)
    write_manifest(
        out,
        stage=f"train:{st.name}",
        fp=fp,
        config=st.model_dump(mode="json"),
        inputs={"init": str(init_dir)},
        counts=summary,
        outputs=[*model_dir.glob("*"), out / "train_log.jsonl"],
        extra={
            "recipe": recipe.model_dump(mode="json"),
            "prepared_fingerprint": _prepared_fp(layout),
            "git_commit": _git_commit(),
            "hardware": _hardware(device),
            "loggers": report_to,
        },
    )
    acc.wait_for_everyone()
    return StageResult(st.name, model_dir, False, summary)


def _gathered_copy(trainer: Any, build: Any) -> Any:
    """Rank 0's side of the end-of-stage gather: the full state dict of the sharded model
    (FSDP2: ``get_model_state_dict(full_state_dict=True)``; ZeRO-3: the consolidated 16-bit state
    dict, which needs ``zero3_save_16bit_model: true``), loaded into a fresh unsharded copy."""
    acc = trainer.accelerator
    state = acc.get_state_dict(trainer.model_wrapped)
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is None:
        fresh = build()
    else:
        # While a ZeRO-3 Trainer exists, from_pretrained partitions every new model inside
        # deepspeed.zero.Init -- collectives that the other ranks never join: rank 0 would hang.
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
        try:
            fresh = build()
        finally:
            plugin.set_deepspeed_weakref()
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    loaded = {t.data_ptr() for k, t in fresh.state_dict().items() if k in state}
    # a tied weight (lm_head = embed_tokens) may be left out of the gathered state dict
    untied = [k for k in missing if fresh.state_dict()[k].data_ptr() not in loaded]
    if unexpected or untied:
        raise StageError(f"gathered state dict does not fit the model: {unexpected or untied}")
    return fresh


def _dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(
        [
            {"input_ids": r["input_ids"], "labels": r["labels"], "seq_lengths": r["seq_lengths"]}
            for r in rows
        ]
    )


def _eval_rows(layout: RunLayout, st: StageSpec, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of the valid split's rows for this stage's tasks (may be empty)."""
    import random

    if not token_path(layout.prepared, "valid").exists():
        return []
    rows = _load_rows(layout, st, "valid")
    k = st.eval_max_examples
    if k is not None and len(rows) > k:
        rows = random.Random(f"{seed}:eval:{st.name}").sample(rows, k)
    return rows


def _check_window(init_dir: Path, rope: Any, rows: list[dict[str, Any]]) -> None:
    """Refuse, before loading the model, sequences longer than its (scaled) window."""
    from clinitune.models import scaled_config

    # the same scaling rule load_model applies (an already scaled config is kept as is)
    window = getattr(scaled_config(init_dir, rope), "max_position_embeddings", None)
    if not window:
        return
    longest = max((r["n_tokens"] for r in rows), default=0)
    if longest > window:
        raise StageError(
            f"prepared rows are up to {longest} tokens but the model at {init_dir} takes "
            f"{window}: set model.rope_scaling (e.g. type: linear, factor: "
            f"{math.ceil(longest / window * 10) / 10}) or lower data.max_seq_len and re-prepare"
        )


def _param_count(model_dir: Path) -> int:
    """Parameters in a model directory's safetensors files (headers only, no weights read)."""
    from safetensors import safe_open

    n = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():  # noqa: SIM118 (safe_open is not iterable)
                shape = sf.get_slice(k).get_shape()
                size = 1
                for d in shape:
                    size *= d
                n += size
    return n


def _available_memory(device: str) -> int | None:
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(init_dir: Path, st: StageSpec, dtype: str) -> None:
    """Refuse a stage whose weights, gradients and AdamW state alone exceed free memory --
    a lower bound (activations come on top), checked before anything is loaded."""
    from clinitune.models import resolve_dtype

    n = _param_count(init_dir)
    if not n:
        return
    device = pick_device()
    wbytes = 2 if str(resolve_dtype(dtype, device)).endswith(("bfloat16", "float16")) else 4
    # full: weights, gradients, AdamW moments (fp32); lora: frozen weights (adapters are small)
    need = n * (wbytes + wbytes + 8) if st.method == "full" else n * wbytes
    if device == "cuda":  # sharded over the ranks' GPUs (FSDP / ZeRO-3); CPU ranks share RAM
        need //= max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    free = _available_memory(device)
    if free is not None and need > free:
        raise StageError(
            f"stage {st.name!r}: {n / 1e9:.2f}B parameters need at least {need / 2**30:.1f} GiB "
            f"on {device} for {st.method} training (weights, gradients, optimizer state; "
            f"activations come on top) but {free / 2**30:.1f} GiB is free: use method: lora, "
            "a smaller model, or more devices (FSDP, docs/distributed.md)"
        )


def _loggers(wanted: list[str]) -> list[str]:
    import importlib.util

    for name in wanted:  # each logger's package has the logger's name
        if importlib.util.find_spec(name) is None:
            raise StageError(
                f"report_to includes {name!r} but the {name!r} package is not "
                "installed: pip install it, or remove it from the stage's report_to"
            )
    return list(wanted) or ["none"]


def _trainer_class(class_balanced: bool) -> Any:
    from transformers import Trainer

    if not class_balanced:
        return Trainer

    class BalancedTrainer(Trainer):
        """Draws rows so each distinct completion (the label tokens) is equally likely."""

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            from collections import Counter

            import torch

            ds = train_dataset if train_dataset is not None else self.train_dataset
            keys = [tuple(t for t in lab if t != -100) for lab in ds["labels"]]
            counts = Counter(keys)
            weights = torch.tensor([1.0 / counts[k] for k in keys], dtype=torch.double)
            gen = torch.Generator().manual_seed(self.args.data_seed or self.args.seed)
            return torch.utils.data.WeightedRandomSampler(
                weights, num_samples=len(keys), replacement=True, generator=gen
            )

    return BalancedTrainer


def _checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def _resume_point(ckpt_dir: Path, fp: str, prune: bool = True) -> Path | None:
    """The newest complete checkpoint of this exact stage configuration, or None.

    transformers writes ``checkpoint-N`` in place; ``trainer_state.json`` is written after the
    weights, optimizer, scheduler and RNG states, so a checkpoint whose state file is missing or
    unparsable was cut off (e.g. SIGKILL) and is deleted. Checkpoints of another recipe, data or
    starting weights are never resumed."""
    if not ckpt_dir.exists():
        return None
    stamp = ckpt_dir / "FINGERPRINT"
    if not stamp.exists() or stamp.read_text().strip() != fp:
        raise StageError(
            f"{ckpt_dir} holds checkpoints of a different recipe, data or starting weights: "
            "run without --resume to start the stage afresh"
        )
    complete: list[Path] = []
    for d in ckpt_dir.glob("checkpoint-*"):
        try:
            state = json.loads((d / "trainer_state.json").read_text())
            if state.get("global_step") != _checkpoint_step(d):
                raise ValueError
            complete.append(d)
        except (OSError, ValueError):
            if prune:  # incomplete; under torchrun only the main process deletes
                shutil.rmtree(d, ignore_errors=True)
    return max(complete, key=_checkpoint_step, default=None)


def _truncate_log(path: Path, step: int) -> None:
    rows = [r for r in _read_log(path) if r.get("step", 0) <= step]
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return out


def _git_commit() -> str | None:
    import subprocess

    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None


def _hardware(device: str) -> dict[str, Any]:
    import platform

    import torch

    hw: dict[str, Any] = {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }
    if device == "cuda":
        hw["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return hw


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


def train(
    recipe: Recipe, layout: RunLayout, *, force: bool = False, resume: bool = False
) -> list[StageResult]:
    if not recipe.train:
        raise StageError("the recipe has no train stages")
    results = []
    for i in range(len(recipe.train)):
        results.append(train_stage(recipe, layout, i, force=force, resume=resume))
        force = force or not results[-1].skipped  # downstream stages must retrain
    return results


def merge_lora(adapter_dir: Path, out_dir: Path, base: Path | None = None) -> Path:
    """Merge a saved LoRA adapter into its base model's weights and save a plain HF model
    (``clinitune merge-lora``). The base is the adapter's ``base_model_name_or_path`` unless
    given; the result is written to a fresh folder and swapped in."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.exists():
        raise StageError(f"{adapter_dir} is not a LoRA adapter (no adapter_config.json)")
    if base is None:
        name = json.loads(cfg_path.read_text()).get("base_model_name_or_path")
        if not name:
            raise StageError(f"{cfg_path} names no base model: pass --base")
        base = resolve_model(name)
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    tok_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").exists() else base
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".merge."))
    merged.save_pretrained(tmp)
    load_tokenizer(tok_dir).save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def final_model_dir(recipe: Recipe, layout: RunLayout) -> Path:
    if not recipe.train:
        return resolve_model(recipe.model.name, recipe.model.revision)
    return stage_model_dir(layout, recipe.train[-1].name)


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")
