"""Training throughput: clinitune (padding-free) against a plain TRL ``SFTTrainer`` (padded).

What it measures
----------------
Both trainers fine-tune the embedded ``smollm2-135m-instruct`` (135M parameters, full fine-tune,
fp32, CPU, SDPA attention) for the same number of optimizer steps on exactly the same examples,
one after the other in one process:

* **The data.** ``clinitune prepare`` on the bundled quickstart recipe (ACI-Bench
  ``assessment_plan`` + MTS-Dialog ``dialogue_note`` samples) with ``data.max_seq_len``
  (``--max-seq-len``, default 512): the rows of ``<run>/prepared/tokens/train.parquet`` for the
  stage's tasks. Each row is ``input_ids`` + ``labels`` (-100 on the prompt; completion + EOS
  trained).
* **clinitune**: ``clinitune.train.runner.train_stage`` -- the product's own training code
  (``transformers.Trainer``, micro-batches flattened padding-free by
  ``SegmentCollator(DataCollatorWithFlattening())``: no pad tokens, position ids restart per
  example). The stage also loads and saves the model and may run a final held-out evaluation:
  none of that is timed (``train.sft.eval_max_examples`` is set to 4 where the recipe has the
  field, to keep it short; ``report_to`` to none, as for TRL).
* **TRL** (``trl.SFTTrainer``, the installed version): the same rows as a pre-tokenized dataset
  (``input_ids`` + ``completion_mask`` = 1 where clinitune's label is not -100) with
  ``completion_only_loss=True``, so TRL builds the labels itself; ``padding_free=False``,
  ``packing=False``: TRL's default collator pads each batch to its longest example.
  ``max_length`` = the same ``max_seq_len`` (the rows already fit: nothing is truncated or
  dropped; checked). TRL defaults that would change the comparison are set to clinitune's:
  ``activation_checkpointing=False`` (TRL defaults to on), ``bf16=False`` (TRL defaults to on,
  which on CPU means bf16 autocast), ``logging_steps=1``. TRL computes the loss with its own
  fused LM head (chunked log-probs, no full logits; on CPU it scores every position, padding
  included); clinitune uses the model's own loss. Both divide the summed token loss by the
  number of trained tokens.

Same for both: batch size, gradient accumulation, learning rate, scheduler, warmup, weight
decay, grad-norm clipping, seed and data seed (both are ``Trainer`` subclasses with the default
random sampler over datasets of the same length, so they draw the same examples in the same
order -- the benchmark records every batch and checks this), fp32, torch threads.

The time is the wall time of ``Trainer.train()``, measured the same way for both (a wrapper
around ``transformers.Trainer.train``, which both call; clinitune's own ``train_runtime_s`` is
reported next to it). Each batch the collators build is recorded (a wrapper around clinitune's
``SegmentCollator`` and around TRL's collator; it only counts): tokens processed including
padding (``input_ids`` elements), useful tokens (non-pad: the examples' own tokens), trained
tokens (labels != -100) and which examples. Reported per trainer: steps, wall time, total
tokens incl. padding, useful tokens, pad fraction, useful tokens/s; also the per-step wall times
(a callback added to both trainers) and useful tokens/s without the first step ("steady": the
first step also pays one-time costs such as optimizer state allocation), the first-step loss (same
weights, same batch: the two should agree closely -- a check that both train on the same tokens
with the same masks) and the mean of the last ``--last-k`` logged losses (should agree within
noise). The headline is the ratio of useful tokens/s, clinitune / TRL (issue target: >= 1.5x,
with clinitune's pad fraction <= 5%). As both runs see the same examples at each step, steps are
also compared in pairs: over steps 2.. where neither run had other processes using
``--clean-cores`` (default 0.15) cores or more, the ratio of the summed step times and the median
of the per-step ratios (``comparison.paired_uncontended_steps``; a per-step table is printed).

``--wait-for PATTERN`` (e.g. ``prepare_bench``) waits, after the untimed data preparation and
before any timed training, until ``pgrep -f PATTERN`` finds nothing (polling every 30 s);
``--quiet-cores X`` then waits until other processes use less than X cores in two consecutive
30 s windows (both give up after ``--max-wait`` s in all). During each timed run the CPU time
that *other* processes used is measured from ``/proc/stat`` (``other_cpu_cores``; above ~0.1
core means the timing was contended: on a 2-core machine one busy neighbour halves the
throughput).

Run (from the repository root; ~7 min on a quiet 2-core CPU with the defaults, plus any wait)::

    CLINITUNE_CACHE=/tmp/ctcache .venv/bin/python benchmarks/train_bench.py \\
        --steps 12 --batch-size 4 --max-seq-len 512 --out /tmp/train_bench.json \\
        --wait-for prepare_bench --quiet-cores 0.3   # on a shared machine

``--order trl-first`` runs TRL first (by default clinitune runs first and so pays the process's
one-time warm-up costs). Outputs (run directory, TRL output dir, JSON) go to ``--workdir``
(default ``/tmp/clinitune-train-bench``); the JSON goes to ``--out`` (default
``<workdir>/results.json``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CLINITUNE_PROGRESS", "0")

RECORDS: dict[str, list[dict[str, Any]]] = {"clinitune": [], "trl": []}
TRAIN_CALLS: list[dict[str, Any]] = []  # per Trainer.train call: CpuMeter + step times


# ------------------------------------------------------------------------------ measurement
def batch_stats(features: list[dict[str, Any]], out: dict[str, Any]) -> dict[str, Any]:
    """What one collated micro-batch holds: tokens incl. padding, useful, trained, which rows."""
    ids = out["input_ids"]
    total = int(ids.numel())
    useful = int(out["attention_mask"].sum()) if "attention_mask" in out else total
    return {
        "examples": [hash(tuple(f["input_ids"])) for f in features],
        "lengths": [len(f["input_ids"]) for f in features],
        "shape": list(ids.shape),
        "tokens": total,
        "useful": useful,
        "trained": int((out["labels"] != -100).sum()),
    }


class Recorder:
    """Wraps a data collator; records every batch it builds under ``RECORDS[name]``."""

    def __init__(self, name: str, inner: Any) -> None:
        self.name, self.inner = name, inner

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        out = self.inner(features)
        RECORDS[self.name].append(batch_stats(features, out))
        return out


class CpuMeter:
    """Wall time, this process's CPU time, and the CPU time other processes used meanwhile."""

    @staticmethod
    def _busy_s() -> float:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    @classmethod
    def snapshot(cls) -> tuple[float, float, float]:
        return time.perf_counter(), cls._busy_s(), cls._own_s()

    def __enter__(self) -> CpuMeter:
        self.t0, self.b0, self.o0 = self.snapshot()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.t0
        self.own = self._own_s() - self.o0
        other = max(self._busy_s() - self.b0 - self.own, 0.0)
        self.other_cores = other / self.wall if self.wall > 0 else 0.0


def step_timer() -> Any:
    """A callback noting when training begins and when each optimizer step ends: wall clock,
    machine-wide busy CPU time and this process's CPU time (``CpuMeter.snapshot``)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.begin: tuple[float, float, float] | None = None
            self.ends: list[tuple[float, float, float]] = []

        def on_train_begin(self, args, state, control, **kw):
            self.begin = CpuMeter.snapshot()

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(CpuMeter.snapshot())

    return StepTimer()


class timed_train:
    """Time every ``transformers.Trainer.train`` call (both trainers go through it) the same
    way: one ``CpuMeter`` around the call, and the same step-timer callback added to the
    trainer. The same clock and the same boundaries for both."""

    def __enter__(self) -> timed_train:
        from transformers import Trainer

        self.orig = Trainer.train
        orig = self.orig

        def train(trainer: Any, *a: Any, **kw: Any) -> Any:
            timer = step_timer()
            trainer.add_callback(timer)
            with CpuMeter() as m:
                result = orig(trainer, *a, **kw)
            trainer.remove_callback(timer)
            TRAIN_CALLS.append({"meter": m, "begin": timer.begin, "ends": timer.ends})
            return result

        Trainer.train = train  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        from transformers import Trainer

        Trainer.train = self.orig  # type: ignore[method-assign]


def _is_train_bench(pid: int) -> bool:
    """This process, or another run of this benchmark (its ``--wait-for PATTERN`` argument
    would match ``pgrep -f PATTERN``)."""
    if pid == os.getpid():
        return True
    try:
        return "train_bench" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True  # gone


def wait_for_quiet(
    pattern: str, quiet_cores: float | None, max_wait: float, poll: float = 30.0
) -> dict[str, Any]:
    """Wait until ``pgrep -f pattern`` finds nothing (if a pattern is given), then until other
    processes use less than ``quiet_cores`` CPU cores in each of two consecutive
    ``poll``-second windows (if given). Gives up after ``max_wait`` seconds in all."""
    t0 = time.perf_counter()
    while pattern:
        r = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
        pids = [p for p in r.stdout.split() if p.strip() and not _is_train_bench(int(p))]
        waited = time.perf_counter() - t0
        if not pids:
            break
        if waited >= max_wait:
            print(f"[wait] still running after {waited:.0f} s: {pattern} ({pids}); going on")
            break
        print(f"[wait] {pattern} running (pids {' '.join(pids)}); {waited:.0f} s", flush=True)
        time.sleep(poll)
    other, quiet = None, 0
    while quiet_cores is not None:
        with CpuMeter() as m:
            time.sleep(poll)
        other = m.other_cores
        quiet = quiet + 1 if other < quiet_cores else 0
        waited = time.perf_counter() - t0
        if quiet >= 2 or waited >= max_wait:
            break
        print(f"[wait] other processes use {other:.2f} cores; {waited:.0f} s", flush=True)
    return {"waited_s": round(time.perf_counter() - t0, 1), "other_cores_last_window": other}


def summarize(
    name: str,
    batches: list[dict[str, Any]],
    steps: int,
    grad_accum: int,
    call: dict[str, Any],
    log: list[dict[str, Any]],
    last_k: int,
) -> dict[str, Any]:
    m = call["meter"]
    wall = m.wall
    used = batches[: steps * grad_accum]  # the dataloader may prefetch one batch more
    tokens = sum(b["tokens"] for b in used)
    useful = sum(b["useful"] for b in used)
    trained = sum(b["trained"] for b in used)
    losses = [r["loss"] for r in log if "loss" in r]
    # Per step: wall time from on_train_begin (or the previous step's end) to the step's end,
    # and the CPU cores other processes used meanwhile.
    ends = call["ends"][:steps]
    step_s, step_other = [], []
    for a, b in zip([call["begin"], *ends[:-1]], ends, strict=True):
        dt = b[0] - a[0]
        step_s.append(dt)
        step_other.append(max(b[1] - a[1] - (b[2] - a[2]), 0.0) / dt if dt > 0 else 0.0)
    per_step = [
        {
            "s": round(dt, 3),
            "other_cores": round(o, 3),
            "useful": sum(b["useful"] for b in used[i * grad_accum : (i + 1) * grad_accum]),
            "tokens": sum(b["tokens"] for b in used[i * grad_accum : (i + 1) * grad_accum]),
        }
        for i, (dt, o) in enumerate(zip(step_s, step_other, strict=True))
    ]
    steady = None
    if steps > 1 and len(step_s) == steps:
        dt = sum(step_s[1:])
        useful_rest = sum(b["useful"] for b in used[grad_accum:])
        tokens_rest = sum(b["tokens"] for b in used[grad_accum:])
        steady = {
            "steps": steps - 1,
            "wall_s": round(dt, 2),
            "useful_tokens_per_s": round(useful_rest / dt, 1) if dt > 0 else None,
            "tokens_per_s": round(tokens_rest / dt, 1) if dt > 0 else None,
        }
    k = min(last_k, len(losses))
    return {
        "trainer": name,
        "steps": steps,
        "micro_batches": len(used),
        "wall_s": round(wall, 2),
        "setup_s_before_first_step": round(call["begin"][0] - m.t0, 2) if call["begin"] else None,
        "step_s": [round(x, 2) for x in step_s],
        "per_step": per_step,
        "other_cpu_cores": round(m.other_cores, 3),
        "own_cpu_s": round(m.own, 1),
        "tokens_incl_padding": tokens,
        "useful_tokens": useful,
        "trained_tokens": trained,
        "pad_fraction": round(1 - useful / tokens, 4) if tokens else None,
        "useful_tokens_per_s": round(useful / wall, 1),
        "tokens_per_s_incl_padding": round(tokens / wall, 1),
        "steady_excl_first_step": steady,
        "first_loss": losses[0] if losses else None,
        "last_loss_mean": sum(losses[-k:]) / k if k else None,
        "last_k": k,
        "losses": losses,
        "learning_rates": [r.get("learning_rate") for r in log if "loss" in r],
        "batch_shapes": [b["shape"] for b in used],
    }


def log_callback() -> Any:
    """Keeps every Trainer log (numeric values), as clinitune's ``_LossLog`` does."""
    from transformers import TrainerCallback

    class Log(TrainerCallback):
        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []

        def on_log(self, args, state, control, logs=None, **kw):
            if logs is not None:
                row = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
                self.rows.append({"step": state.global_step, **row})

    return Log()


# ---------------------------------------------------------------------------------- setup
def build_recipe(args: argparse.Namespace) -> Any:
    from clinitune.recipe import StageSpec, load_recipe

    st = "train.sft"
    overrides = [
        f"run_dir={Path(args.workdir) / 'run'}",
        f"seed={args.seed}",
        f"data.max_seq_len={args.max_seq_len}",
        f"{st}.method=full",
        f"{st}.max_steps={args.steps}",
        f"{st}.batch_size={args.batch_size}",
        f"{st}.grad_accum=1",
        f"{st}.logging_steps=1",
        f"{st}.gradient_checkpointing=false",
    ]
    fields = StageSpec.model_fields
    # Fields of a newer runner: no logger (TRL gets report_to=none), no mid-training
    # evaluation or checkpoints, and a tiny final evaluation (it runs after the timed part).
    if "report_to" in fields:
        overrides.append(f"{st}.report_to=[]")
    if "eval_max_examples" in fields:
        overrides.append(f"{st}.eval_max_examples=4")
    for name in ("eval_steps", "save_steps", "early_stopping_patience"):
        if name in fields:
            overrides.append(f"{st}.{name}=null")
    if "class_balanced" in fields:
        overrides.append(f"{st}.class_balanced=false")
    return load_recipe("quickstart", overrides)


def load_rows(layout: Any, tasks: list[str]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from clinitune.data.prepare import token_path

    table = pq.read_table(
        token_path(layout.prepared, "train"), columns=["input_ids", "labels", "seq_lengths", "task"]
    )
    return [r for r in table.to_pylist() if r["task"] in tasks]


# ---------------------------------------------------------------------------------- runs
def run_clinitune(recipe: Any, layout: Any, args: argparse.Namespace) -> dict[str, Any]:
    from clinitune.train import runner

    base = runner.SegmentCollator

    class RecordingSegmentCollator(base):  # type: ignore[misc, valid-type]
        def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
            out = super().__call__(features)
            RECORDS["clinitune"].append(batch_stats(features, out))
            return out

    runner.SegmentCollator = RecordingSegmentCollator
    try:
        with CpuMeter() as whole, timed_train():
            res = runner.train_stage(recipe, layout, 0, force=True)
    finally:
        runner.SegmentCollator = base
    s = res.summary
    log_path = layout.stage(recipe.train[0].name) / "train_log.jsonl"
    log = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()]
    out = summarize(
        "clinitune",
        RECORDS["clinitune"],
        int(s["steps"]),
        recipe.train[0].grad_accum,
        TRAIN_CALLS[-1],
        log,
        args.last_k,
    )
    out["dtype"] = s.get("dtype")
    out["device"] = s.get("device")
    out["train_runtime_s_reported_by_clinitune"] = s.get("train_runtime_s")
    out["train_stage_wall_s_incl_load_save_eval"] = round(whole.wall, 2)
    return out


def run_trl(
    recipe: Any, rows: list[dict[str, Any]], model_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTConfig, SFTTrainer

    from clinitune.models import load_tokenizer

    st = recipe.train[0]
    ds = Dataset.from_list(
        [
            {
                "input_ids": r["input_ids"],
                "completion_mask": [int(x != -100) for x in r["labels"]],
            }
            for r in rows
        ]
    )
    cfg = SFTConfig(
        output_dir=str(Path(args.workdir) / "trl"),
        max_steps=st.max_steps,
        per_device_train_batch_size=st.batch_size,
        gradient_accumulation_steps=st.grad_accum,
        learning_rate=st.learning_rate,
        lr_scheduler_type=st.lr_scheduler,
        warmup_steps=st.warmup_ratio,  # as clinitune passes it (< 1: a ratio)
        weight_decay=st.weight_decay,
        max_grad_norm=st.max_grad_norm,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=recipe.seed,
        data_seed=recipe.seed,
        bf16=False,
        fp16=False,
        use_cpu=True,
        activation_checkpointing=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        max_length=recipe.data.max_seq_len,
        packing=False,
        padding_free=False,
        completion_only_loss=True,
        model_init_kwargs={
            "dtype": "float32",
            "attn_implementation": recipe.model.attn_implementation,
        },
    )
    assert not cfg.activation_checkpointing and not cfg.bf16
    log = log_callback()
    trainer = SFTTrainer(
        model=str(model_dir),
        args=cfg,
        train_dataset=ds,
        processing_class=load_tokenizer(model_dir),
        callbacks=[log],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    prepared = trainer.train_dataset
    same_rows = len(prepared) == len(rows) and all(
        a == r["input_ids"] and b == r["labels"]
        for a, b, r in zip(prepared["input_ids"], prepared["labels"], rows, strict=True)
    )
    trainer.data_collator = Recorder("trl", trainer.data_collator)
    model = trainer.model
    with timed_train():
        result = trainer.train()
    out = summarize(
        "trl",
        RECORDS["trl"],
        int(result.global_step),
        st.grad_accum,
        TRAIN_CALLS[-1],
        log.rows,
        args.last_k,
    )
    out["dtype"] = str(model.dtype)
    out["device"] = str(model.device)
    out["attn_implementation"] = model.config._attn_implementation
    out["same_examples_and_labels_as_clinitune"] = same_rows
    out["num_tokens_logged_by_trl"] = next(
        (r["num_tokens"] for r in reversed(log.rows) if "num_tokens" in r), None
    )
    del trainer, model
    gc.collect()
    return out


# ---------------------------------------------------------------------------------- main
def machine() -> dict[str, Any]:
    import torch
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = round(kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "mem_gib": mem,
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
    }


def git_commit() -> str | None:
    r = subprocess.run(
        ["git", "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    return (r.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")) or None


def paired_clean_steps(c: dict[str, Any], t: dict[str, Any], limit: float) -> dict[str, Any]:
    """Both trainers see the same examples at each step, so step i of one can be compared with
    step i of the other. Steps 2.. where neither run was disturbed by other processes (fewer
    than ``limit`` cores): their useful tokens/s, and the median of the per-step ratios."""
    pc, pt = c["per_step"], t["per_step"]
    idx = [
        i
        for i in range(1, min(len(pc), len(pt)))
        if pc[i]["other_cores"] < limit and pt[i]["other_cores"] < limit
    ]
    if not idx:
        return {"steps": [], "limit_cores": limit}
    useful = sum(pc[i]["useful"] for i in idx)
    tc = sum(pc[i]["s"] for i in idx)
    tt = sum(pt[i]["s"] for i in idx)
    ratios = sorted(pt[i]["s"] / pc[i]["s"] for i in idx)
    mid = len(ratios) // 2
    median = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
    return {
        "limit_cores": limit,
        "steps": [i + 1 for i in idx],
        "useful_tokens": useful,
        "trl_tokens_incl_padding": sum(pt[i]["tokens"] for i in idx),
        "clinitune_s": round(tc, 2),
        "trl_s": round(tt, 2),
        "clinitune_useful_tokens_per_s": round(useful / tc, 1),
        "trl_useful_tokens_per_s": round(useful / tt, 1),
        "ratio": round(tt / tc, 3),
        "median_step_ratio": round(median, 3),
    }


def print_table(res: dict[str, Any]) -> None:
    c, t = res["clinitune"], res["trl"]
    rows = [
        ("steps", "steps", "{}"),
        ("wall time, trainer.train() (s)", "wall_s", "{:.1f}"),
        ("tokens processed incl. padding", "tokens_incl_padding", "{:,}"),
        ("useful (non-pad) tokens", "useful_tokens", "{:,}"),
        ("trained (completion) tokens", "trained_tokens", "{:,}"),
        ("pad fraction", "pad_fraction", "{:.1%}"),
        ("useful tokens/s", "useful_tokens_per_s", "{:.1f}"),
        ("tokens/s incl. padding", "tokens_per_s_incl_padding", "{:.1f}"),
        ("first-step loss", "first_loss", "{:.4f}"),
        (f"mean loss, last {c['last_k']} steps", "last_loss_mean", "{:.4f}"),
        ("other processes' CPU (cores)", "other_cpu_cores", "{:.2f}"),
    ]
    print()
    print(f"{'':34s} {'clinitune':>14s} {'TRL SFTTrainer':>16s}")
    for label, key, fmt in rows:
        a, b = c.get(key), t.get(key)
        fa = fmt.format(a) if a is not None else "-"
        fb = fmt.format(b) if b is not None else "-"
        print(f"{label:34s} {fa:>14s} {fb:>16s}")
    sc, stt = c.get("steady_excl_first_step"), t.get("steady_excl_first_step")
    if sc and stt:
        print(
            f"{'useful tokens/s, excl. step 1':34s} {sc['useful_tokens_per_s']:>14.1f} "
            f"{stt['useful_tokens_per_s']:>16.1f}"
        )
        print(f"{'first step (s)':34s} {c['step_s'][0]:>14.1f} {t['step_s'][0]:>16.1f}")
        print(
            f"{'mean of the later steps (s)':34s} {sc['wall_s'] / sc['steps']:>14.1f} "
            f"{stt['wall_s'] / stt['steps']:>16.1f}"
        )
    cmp = res["comparison"]
    print()
    print(
        f"useful tokens/s ratio clinitune / TRL: {cmp['useful_tokens_per_s_ratio']:.2f}x "
        f"(target >= 1.5x: {'met' if cmp['target_ratio_met'] else 'NOT met'}); "
        f"clinitune pad fraction {c['pad_fraction']:.1%} "
        f"(target <= 5%: {'met' if cmp['target_pad_met'] else 'NOT met'})"
    )
    if cmp.get("steady_ratio") is not None:
        print(f"ratio excluding the first step: {cmp['steady_ratio']:.2f}x")
    pcs = cmp["paired_uncontended_steps"]
    if pcs["steps"]:
        print(
            f"steps where neither run was disturbed (other processes < {pcs['limit_cores']} "
            f"cores; step 1 excluded): {len(pcs['steps'])} ({pcs['steps']}): "
            f"{pcs['clinitune_useful_tokens_per_s']:.1f} vs {pcs['trl_useful_tokens_per_s']:.1f} "
            f"useful tokens/s, ratio {pcs['ratio']:.2f}x (median per step "
            f"{pcs['median_step_ratio']:.2f}x)"
        )
    else:
        print("no step where both runs were undisturbed by other processes")
    print()
    print("step  useful  TRL tokens  clinitune s (other cores)  TRL s (other cores)")
    for i, (a, b) in enumerate(zip(c["per_step"], t["per_step"], strict=False)):
        print(
            f"{i + 1:4d} {a['useful']:7d} {b['tokens']:11d} {a['s']:12.2f} ({a['other_cores']:.2f})"
            f" {b['s']:13.2f} ({b['other_cores']:.2f})"
        )
    print(
        f"same examples in the same order: {cmp['same_data_order']}; same labels: "
        f"{t['same_examples_and_labels_as_clinitune']}; first-step loss diff "
        f"{cmp['first_loss_abs_diff']:.2e}; last-{c['last_k']} mean loss diff "
        f"{cmp['last_loss_mean_abs_diff']:.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--last-k", type=int, default=4, help="final loss = mean of the last k steps")
    p.add_argument("--order", choices=["clinitune-first", "trl-first"], default="clinitune-first")
    p.add_argument("--workdir", default="/tmp/clinitune-train-bench")
    p.add_argument("--out", default=None, help="JSON results (default <workdir>/results.json)")
    p.add_argument("--wait-for", default="", help="wait until `pgrep -f` finds nothing")
    p.add_argument(
        "--quiet-cores",
        type=float,
        default=None,
        help="then wait until other processes use fewer CPU cores than this (30 s windows)",
    )
    p.add_argument("--max-wait", type=float, default=2400.0)
    p.add_argument(
        "--clean-cores",
        type=float,
        default=0.15,
        help="a step is uncontended when other processes used fewer cores than this",
    )
    args = p.parse_args(argv)

    from clinitune.data.prepare import prepare
    from clinitune.models import resolve_model
    from clinitune.run import RunLayout

    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    recipe = build_recipe(args)
    layout = RunLayout(recipe.run_path)
    t0 = time.perf_counter()
    prepare(recipe, layout)
    st = recipe.train[0]
    rows = load_rows(layout, st.tasks)
    if any(len(r["seq_lengths"] or [1]) > 1 for r in rows):
        print("note: some rows are packed (several segments); TRL sees them as one example each")
    model_dir = resolve_model(recipe.model.name, recipe.model.revision)
    print(
        f"prepared {len(rows)} train rows in {time.perf_counter() - t0:.1f} s "
        f"(max_seq_len {recipe.data.max_seq_len}); model {model_dir}"
    )

    waited = wait_for_quiet(args.wait_for, args.quiet_cores, args.max_wait)
    results: dict[str, Any] = {}
    order = ["clinitune", "trl"] if args.order == "clinitune-first" else ["trl", "clinitune"]
    for name in order:
        print(f"[{name}] training {args.steps} steps x {args.batch_size} examples ...", flush=True)
        if name == "clinitune":
            results[name] = run_clinitune(recipe, layout, args)
        else:
            results[name] = run_trl(recipe, rows, model_dir, args)
        r = results[name]
        print(
            f"[{name}] {r['wall_s']:.1f} s, {r['useful_tokens_per_s']:.1f} useful tokens/s, "
            f"pad {r['pad_fraction']:.1%}, last loss mean {r['last_loss_mean']:.4f}",
            flush=True,
        )
        gc.collect()

    c, t = results["clinitune"], results["trl"]
    n = args.steps * st.grad_accum
    same_order = [b["examples"] for b in RECORDS["clinitune"][:n]] == [
        b["examples"] for b in RECORDS["trl"][:n]
    ]
    ratio = c["useful_tokens_per_s"] / t["useful_tokens_per_s"]
    sc, stt = c["steady_excl_first_step"], t["steady_excl_first_step"]
    steady_ratio = (
        sc["useful_tokens_per_s"] / stt["useful_tokens_per_s"]
        if sc and stt and stt["useful_tokens_per_s"]
        else None
    )
    paired = paired_clean_steps(c, t, args.clean_cores)
    out = {
        "benchmark": "train_bench",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": git_commit(),
        "machine": machine(),
        "config": {
            "recipe": "quickstart",
            "model": recipe.model.name,
            "tasks": st.tasks,
            "train_rows": len(rows),
            "steps": args.steps,
            "batch_size": st.batch_size,
            "grad_accum": st.grad_accum,
            "learning_rate": st.learning_rate,
            "lr_scheduler": st.lr_scheduler,
            "warmup_ratio": st.warmup_ratio,
            "max_seq_len": recipe.data.max_seq_len,
            "seed": recipe.seed,
            "order": order,
            "wait": waited,
        },
        "clinitune": c,
        "trl": t,
        "comparison": {
            "useful_tokens_per_s_ratio": round(ratio, 3),
            "steady_ratio": round(steady_ratio, 3) if steady_ratio else None,
            "paired_uncontended_steps": paired,
            "target_ratio_met": ratio >= 1.5,
            "target_pad_met": c["pad_fraction"] <= 0.05,
            "same_data_order": same_order,
            "first_loss_abs_diff": abs(c["first_loss"] - t["first_loss"]),
            "last_loss_mean_abs_diff": abs(c["last_loss_mean"] - t["last_loss_mean"]),
        },
    }
    print_table(out)
    path = Path(args.out) if args.out else Path(args.workdir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
