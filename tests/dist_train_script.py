"""One rank of a 2-process sharded training run on CPU, for ``tests/test_distributed.py``.

Launched by ``accelerate launch --config_file examples/accelerate/fsdp_cpu_2proc.yaml`` (FSDP2)
or ``deepspeed_zero3_cpu_2proc.yaml`` (ZeRO-3), never imported by pytest. It builds the Trainer
the way ``clinitune.train.runner.train_stage`` does -- ``load_model``, ``disable_kv_cache``,
pre-tokenized rows with ``seq_lengths``, ``SegmentCollator(DataCollatorWithFlattening())`` -- and
writes what each rank saw to ``<out>/rank<N>.json``: the distributed type, the parameters this
rank holds (local shard sizes), the loss of each step. At the end the shards are gathered into
one full state dict on rank 0 and saved as a plain HF model (``<out>/<final>``).

Why not ``clinitune train`` itself: the runner's end-of-stage ``save_pretrained`` does not work on
a sharded model yet (docs/distributed.md, "What clinitune's runner needs").

CPU caveat (accelerate 1.15): ``AcceleratorState`` turns ``ACCELERATE_USE_FSDP`` into FSDP only
for GPU-class devices; on CPU (``MULTI_CPU``, gloo) it silently falls back to DDP. torch's FSDP2
itself runs on a CPU mesh with gloo, so ``_enable_fsdp_on_cpu`` relabels the CPU process group
before the Trainer builds its Accelerator; everything after that is accelerate's own FSDP2 path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _enable_fsdp_on_cpu() -> list[bool]:
    """Let accelerate's FSDP plugin run on a CPU (gloo) process group. The returned list gets a
    ``True`` each time the stock state had fallen back to DDP (``MULTI_CPU``) and was relabelled."""
    import transformers
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    original = transformers.Trainer.create_accelerator_and_postprocess
    fell_back: list[bool] = []

    def create_accelerator_and_postprocess(self: Any) -> Any:
        ps = PartialState._shared_state
        if ps.get("distributed_type") == DistributedType.MULTI_CPU:
            # AcceleratorState enables FSDP from the GPU branch only; it keeps device = cpu.
            ps["distributed_type"] = DistributedType.MULTI_GPU
            fell_back.append(True)
        return original(self)

    transformers.Trainer.create_accelerator_and_postprocess = create_accelerator_and_postprocess
    return fell_back


@contextlib.contextmanager
def _without_zero3_init(acc: Any) -> Iterator[None]:
    """While a ZeRO-3 Trainer exists, ``from_pretrained`` builds every new model inside
    ``deepspeed.zero.Init``, which partitions it with collectives: rank 0 building its copy alone
    would wait forever for the other ranks. Build a plain model instead."""
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is None:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()


def _rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Pre-tokenized rows like prepare's: some packed (two documents, ``seq_lengths``)."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        lengths = [rng.randint(8, 40)] + ([rng.randint(8, 40)] if i % 2 else [])
        ids = [rng.randint(5, 999) for _ in range(sum(lengths))]
        labels = [t if j >= 4 else -100 for j, t in enumerate(ids)]  # a masked "prompt"
        rows.append({"input_ids": ids, "labels": labels, "seq_lengths": lengths})
    return rows


def _local_numel(p: Any) -> int:
    if hasattr(p, "ds_tensor"):  # ZeRO-3: this rank's partition
        return p.ds_tensor.numel()
    if hasattr(p, "to_local"):  # FSDP2: a DTensor, Shard(0) over the mesh
        return p.to_local().numel()
    return p.numel()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--save-steps", type=int, default=2)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--final", default="final")
    a = ap.parse_args()

    import torch
    from datasets import Dataset
    from transformers import DataCollatorWithFlattening, Trainer, TrainerCallback, TrainingArguments

    from clinitune.models import load_model
    from clinitune.train.runner import SegmentCollator, disable_kv_cache

    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    fell_back: list[bool] = []
    if not deepspeed and not torch.cuda.is_available():
        fell_back = _enable_fsdp_on_cpu()

    def build() -> Any:
        m = load_model(Path(a.model), dtype="float32", device="cpu")
        disable_kv_cache(m)
        return m

    model = build()
    total = sum(p.numel() for p in model.parameters())
    out = Path(a.out)
    report: dict[str, Any] = {"total_numel": total, "losses": {}}

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if "local_numel" not in report:  # after the first step: parameters are sharded
                params = list(model.parameters())
                report["local_numel"] = sum(_local_numel(p) for p in params)
                report["param_types"] = sorted({type(p.data).__name__ for p in params})

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                report["losses"][state.global_step] = logs["loss"]

    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        max_steps=a.max_steps,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="steps",
        save_steps=a.save_steps,
        report_to="none",
        seed=0,
        data_seed=0,
        # FSDP on CPU: use_cpu gives the gloo (MULTI_CPU) process group. DeepSpeed ignores
        # accelerate's cpu flag: it needs use_cpu=False and an explicit gloo backend instead.
        use_cpu=not deepspeed,
        ddp_backend="gloo" if deepspeed else None,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(_rows(32, seed=0)),
        data_collator=SegmentCollator(DataCollatorWithFlattening()),
        callbacks=[Probe()],
    )
    acc = trainer.accelerator
    report.update(
        rank=acc.process_index,
        world_size=acc.num_processes,
        distributed_type=str(acc.distributed_type).rsplit(".", 1)[-1],
        fsdp2=bool(acc.is_fsdp2) if trainer.is_fsdp_enabled else False,
        cpu_fsdp_shim=bool(fell_back),  # False: accelerate enabled FSDP by itself
    )
    trainer.train(resume_from_checkpoint=a.resume)

    # The end-of-stage save clinitune needs: gather the shards (every rank takes part), load them
    # into a fresh unsharded copy on rank 0, save_pretrained as usual.
    state = acc.get_state_dict(trainer.model_wrapped)
    if acc.is_main_process:
        with _without_zero3_init(acc):
            fresh = build()
        missing, unexpected = fresh.load_state_dict(state, strict=False)
        loaded = {t.data_ptr() for k, t in fresh.state_dict().items() if k in state}
        untied = [k for k in missing if fresh.state_dict()[k].data_ptr() not in loaded]
        assert not unexpected and not untied, (unexpected, untied)
        fresh.save_pretrained(out / a.final)
    acc.wait_for_everyone()
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
