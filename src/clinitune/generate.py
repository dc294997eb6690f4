"""``clinitune generate``: batched generation on a held-out split, per model.

Prompts are the exact prompt tokens training used (from ``data.pack``), so base and tuned models
are asked the same thing the tuned model was trained on. Batches are left-padded and sorted by
length; decoding is greedy (deterministic). The same seeded sample of records is used for every
model, so per-example metrics can be paired.

Writes ``<run>/generations/<model>.jsonl``: task, note_id, prediction, reference, token counts,
and whether the model stopped by itself (EOS) or hit ``max_new_tokens``.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinitune.data.pack import ChatFormatter, generation_prompt, pad_id
from clinitune.data.prepare import read_records
from clinitune.errors import StageError
from clinitune.models import (
    cache_kwarg,
    load_model,
    load_tokenizer,
    model_identity,
    pick_device,
    resolve_model,
)
from clinitune.progress import track
from clinitune.recipe import Recipe
from clinitune.run import RunLayout, fingerprint, is_up_to_date, read_manifest, write_manifest


@dataclass
class ModelRef:
    label: str
    path: Path
    fingerprint: str


def resolve_eval_model(recipe: Recipe, layout: RunLayout, name: str) -> ModelRef:
    """``base`` | ``final`` | a stage name | a path -> a local model directory, with an identity
    of its weights (so generations and metrics are redone when the weights change)."""
    from clinitune.train.runner import check_stage_current, stage_output_identity

    if name == "base":
        path = resolve_model(recipe.model.name, recipe.model.revision)
        return ModelRef("base", path, f"model:{model_identity(path)}")
    stages = [s.name for s in recipe.train]
    if name == "final" or name in stages:
        if not stages:
            raise StageError("evaluate.models names 'final' but the recipe has no train stages")
        stage = stages[-1] if name == "final" else name
        check_stage_current(recipe, layout, stage)
        return ModelRef(
            name, layout.stage(stage) / "model", f"stage:{stage_output_identity(layout, stage)}"
        )
    path = Path(name).expanduser()
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        if path.exists() or name.startswith((".", "/", "~")):
            raise StageError(f"evaluate.models: {name!r} is not a model directory (no config.json)")
        # an embedded name or a hub id (offline: from the local HF cache; a clear error if absent)
        path = resolve_model(name)
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip("./")) or "model"
    return ModelRef(label, path, f"model:{model_identity(path)}")


def resolve_eval_models(recipe: Recipe, layout: RunLayout) -> list[ModelRef]:
    refs = [resolve_eval_model(recipe, layout, n) for n in recipe.evaluate.models]
    labels = [r.label for r in refs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise StageError(f"evaluate.models: two models would both be labelled {dup[0]!r}")
    return refs


def sample_per_task(
    rows: list[dict[str, Any]], tasks: list[str] | None, k: int | None, key: str
) -> list[dict[str, Any]]:
    """A seeded random sample of up to k rows per task, tasks in sorted order (never "the
    first N": exports are often sorted by date, site or label). The generator of a task is
    seeded with ``f"{key}:{task}"``."""
    out = []
    for task in sorted({r["task"] for r in rows}):
        if tasks and task not in tasks:
            continue
        rs = [r for r in rows if r["task"] == task]
        out += rs if k is None or len(rs) <= k else random.Random(f"{key}:{task}").sample(rs, k)
    return out


def sample_records(
    records: list[dict[str, Any]], tasks: list[str] | None, k: int | None, seed: int
) -> list[dict[str, Any]]:
    """A seeded random sample of up to k chat records per task."""
    return sample_per_task([r for r in records if r["kind"] == "chat"], tasks, k, str(seed))


def generate_for_model(
    recipe: Recipe, layout: RunLayout, ref: ModelRef, *, force: bool = False
) -> Path:
    g = recipe.evaluate.generation
    out_dir = layout.generations
    out_path = out_dir / f"{ref.label}.jsonl"
    prep = read_manifest(layout.prepared)
    if prep is None:
        raise StageError(f"{layout.prepared} has no manifest: run `clinitune prepare` first")
    cfg = {
        "generation": g.model_dump(mode="json"),
        "seed": recipe.seed,
        "model": recipe.model.model_dump(mode="json", exclude={"name", "revision"}),
        "max_seq_len": recipe.data.max_seq_len,
    }
    fp = fingerprint(f"generate:{ref.label}", cfg, {}, [prep["fingerprint"], ref.fingerprint])
    if not force and out_path.exists() and is_up_to_date(out_dir / ref.label, fp):
        return out_path
    # Yes/no and diagnosis tasks are scored by their own evaluations, not by ROUGE.
    tasks = g.tasks or [
        t for t, spec in recipe.data.tasks.items() if spec.type not in ("mention", "diagnosis")
    ]
    records = sample_records(
        read_records(layout.prepared, g.split), tasks, g.max_examples, recipe.seed
    )
    if not records:
        raise StageError(f"no chat records in the {g.split} split to generate for")
    device = pick_device()
    tok = load_tokenizer(ref.path)
    model = load_model(
        ref.path, dtype=recipe.model.dtype, attn=recipe.model.attn_implementation, device=device
    ).eval()
    fmt = ChatFormatter(tok, recipe.model.system_prompt, recipe.model.chat_template_kwargs)
    prompts = []
    dropped = 0
    for r in records:
        ids = generation_prompt(fmt, r, recipe.data.max_seq_len)
        if ids is None:  # the reference alone exceeds max_seq_len: counted in the manifest
            dropped += 1
            continue
        prompts.append((r, ids))
    if not prompts:
        raise StageError(
            f"generation: all {len(records)} sampled records have references longer than "
            "data.max_seq_len; raise it"
        )
    results = []
    t0 = time.perf_counter()
    new_tokens = 0
    outs = generate_batched(
        model,
        tok,
        [p for _, p in prompts],
        batch_size=g.batch_size,
        max_new_tokens=g.max_new_tokens,
        device=device,
        desc=f"generate [{ref.label}]",
    )
    for (rec, p), (seq, stopped) in zip(prompts, outs, strict=True):
        new_tokens += len(seq)
        results.append(
            {
                "task": rec["task"],
                "source": rec["source"],
                "note_id": rec["note_id"],
                "patient_id": rec["patient_id"],
                "prediction": tok.decode(seq, skip_special_tokens=True).strip(),
                "reference": rec["completion"],
                "prompt_tokens": len(p),
                "new_tokens": len(seq),
                "stopped": stopped,
            }
        )
    wall = time.perf_counter() - t0
    results.sort(key=lambda r: (r["task"], r["note_id"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    write_manifest(
        out_dir / ref.label,
        stage=f"generate:{ref.label}",
        fp=fp,
        config=cfg,
        inputs={"model": str(ref.path)},
        counts={
            "examples": len(results),
            "dropped_reference_too_long": dropped,
            "new_tokens": new_tokens,
            "wall_s": round(wall, 2),
            "new_tokens_per_s": round(new_tokens / wall, 1) if wall else None,
        },
        outputs=[out_path],
    )
    del model
    return out_path


def preallocated_cache(capacity: int) -> Any:
    """A KV cache for ``generate`` whose layers append in place into a buffer of ``capacity``
    positions (doubling if ever exceeded). Why by hand: transformers' ``DynamicCache`` grows
    by ``torch.cat`` and so copies the whole cache at every step (14% of a batch-8 decode step
    on a CPU, measured in benchmarks/RESULTS.md), and its ``StaticCache`` attends over all
    ``max_cache_len`` positions at every step (no gain, measured). Here keys and values are
    views of the first ``n`` positions of the buffer: nothing is copied but the new token, and
    attention sees only the positions written so far."""
    from transformers.cache_utils import Cache, DynamicLayer

    class _Layer(DynamicLayer):
        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            super().lazy_initialization(key_states, value_states)
            self._kbuf: Any = None
            self._vbuf: Any = None
            self._view: Any = None
            self._n = 0

        def _rebuild(self, like: Any, vlike: Any, need: int) -> None:
            # first update, or the cache was cropped / reordered / repeated since (those
            # replace self.keys): start a buffer holding the current keys and values
            import torch

            cur = self.keys.shape[-2] if self.keys.numel() else 0
            cap = max(capacity, cur + need) if self._kbuf is None else 2 * (cur + need)
            kbuf = like.new_empty((*like.shape[:-2], cap, like.shape[-1]))
            vbuf = torch.empty(
                (*vlike.shape[:-2], cap, vlike.shape[-1]), dtype=vlike.dtype, device=vlike.device
            )
            if cur:
                kbuf[..., :cur, :] = self.keys
                vbuf[..., :cur, :] = self.values
            self._kbuf, self._vbuf, self._n = kbuf, vbuf, cur

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            m = key_states.shape[-2]
            if self._kbuf is None or self.keys is not self._view:
                self._rebuild(key_states, value_states, m)
            elif self._n + m > self._kbuf.shape[-2]:
                self.keys, self.values = (
                    self._kbuf[..., : self._n, :],
                    self._vbuf[..., : self._n, :],
                )
                self._rebuild(key_states, value_states, m)
            n = self._n
            self._kbuf[..., n : n + m, :] = key_states
            self._vbuf[..., n : n + m, :] = value_states
            self._n = n + m
            self.keys = self._view = self._kbuf[..., : self._n, :]
            self.values = self._vbuf[..., : self._n, :]
            return self.keys, self.values

    return Cache(layer_class_to_replicate=_Layer)


def _full_attention_only(model: Any) -> bool:
    """The model's default cache is plain ``DynamicLayer`` s (full attention: no sliding window,
    chunked attention or recurrent state) and its generation config asks for no other cache:
    the models :func:`preallocated_cache` serves; others keep the cache transformers picks."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if getattr(model.generation_config, "cache_implementation", None):
        return False
    supports = getattr(model, "_supports_default_dynamic_cache", None)
    if callable(supports) and not supports():
        return False
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # a config DynamicCache cannot read: leave the cache to generate
        return False
    return bool(layers) and all(type(x) is DynamicLayer for x in layers)


def _prefill_each(model: Any, rows: list[list[int]], capacity: int, device: str) -> Any:
    """A left-padded batch KV cache of every prompt but its last token, each prompt run alone
    (no compute on padding: on a CPU, prefill is compute-bound, and a length-sorted batch of 8
    dialogue prompts is still ~25% padding). ``generate`` then runs the last column and
    decodes. Positions match ``generate``'s own for left padding (0 at each first real token);
    padded slots stay zero and are masked."""
    import torch
    from transformers import DynamicCache

    name = cache_kwarg(model)
    width = max(len(r) for r in rows) - 1
    per = []
    for r in rows:
        c = DynamicCache()
        if len(r) > 1:
            model(input_ids=torch.tensor([r[:-1]], device=device), use_cache=True,
                  logits_to_keep=1, **{name: c})  # fmt: skip
        per.append(c)
    ref = next(c for c, r in zip(per, rows, strict=True) if len(r) > 1)
    cache = preallocated_cache(capacity)
    for li, layer in enumerate(ref.layers):
        k = layer.keys.new_zeros((len(rows), layer.keys.shape[1], width, layer.keys.shape[3]))
        v = layer.values.new_zeros((len(rows), layer.values.shape[1], width, layer.values.shape[3]))
        for b, (c, r) in enumerate(zip(per, rows, strict=True)):
            if len(r) > 1:
                k[b, :, width - len(r) + 1 :] = c.layers[li].keys[0]
                v[b, :, width - len(r) + 1 :] = c.layers[li].values[0]
        cache.update(k, v, li)
    return cache


def generate_batched(
    model: Any,
    tok: Any,
    prompts: list[list[int]],
    *,
    batch_size: int,
    max_new_tokens: int,
    device: str,
    desc: str,
    prefill_each: bool | None = None,
) -> list[tuple[list[int], bool]]:
    """Greedy continuations of token-id prompts, in input order: (new tokens without the stop
    token, stopped by itself). Prompts are batched by length and left-padded, so a batch of 8
    costs about one forward pass per new token instead of eight. For full-attention models the
    KV cache is preallocated (:func:`preallocated_cache`) and, on a CPU, filled prompt by
    prompt (:func:`_prefill_each`); on a GPU the padded batch prefill is cheaper than a loop
    (``prefill_each`` overrides that choice). Same tokens as one-at-a-time ``generate``
    (tests, both ways)."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    pad = pad_id(tok)
    eos = _stop_ids(tok, model)
    out: list[tuple[list[int], bool]] = [([], False)] * len(prompts)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    plain = _full_attention_only(model)
    each = (device == "cpu") if prefill_each is None else prefill_each
    for batch in track(batches, desc, unit="batch"):
        rows = [prompts[i] for i in batch]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        with torch.inference_mode():
            cache = {}
            if plain and each and width > 1:
                cache = {
                    cache_kwarg(model): _prefill_each(model, rows, width + max_new_tokens, device)
                }
            elif plain:
                cache = {cache_kwarg(model): preallocated_cache(width + max_new_tokens)}
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos,
                pad_token_id=pad,
                **cache,
            )
        for i, seq in zip(batch, gen[:, width:].tolist(), strict=True):
            stopped = any(t in eos for t in seq)
            if stopped:
                seq = seq[: min(seq.index(t) for t in eos if t in seq)]
            out[i] = (seq, stopped)
    return out


def _stop_ids(tok: Any, model: Any) -> list[int]:
    ids = {tok.eos_token_id}
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif isinstance(gen_eos, list):
        ids.update(gen_eos)
    return sorted(i for i in ids if i is not None)


def generate(recipe: Recipe, layout: RunLayout, *, force: bool = False) -> dict[str, Path]:
    out = {}
    for ref in resolve_eval_models(recipe, layout):
        out[ref.label] = generate_for_model(recipe, layout, ref, force=force)
    return out


def read_generations(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
