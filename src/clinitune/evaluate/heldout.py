"""Held-out loss and perplexity on the prepared test split, token-weighted over completion
tokens (the same labels training used), per task and overall.

Examples are flattened padding-free into micro-batches of at most ``_TOKENS`` tokens (position
ids restart per example, so they do not attend to each other), which is both exact and fast.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow.parquet as pq

from clinitune.data.prepare import token_path
from clinitune.errors import StageError
from clinitune.evaluate.registry import EvalContext, LoadedModel, register
from clinitune.generate import sample_per_task
from clinitune.progress import track

_TOKENS = 4096


def sample_rows(ctx: EvalContext) -> list[dict[str, Any]]:
    spec = ctx.recipe.evaluate.held_out
    path = token_path(ctx.layout.prepared, spec.split)
    if not path.exists():
        raise StageError(f"{path} not found: run `clinitune prepare` first")
    rows = pq.read_table(path).to_pylist()
    out = sample_per_task(rows, spec.tasks, spec.max_examples, str(ctx.recipe.seed))
    if not out:
        raise StageError(f"held-out evaluation: the {spec.split} split has no rows")
    return out


def nll_per_example(
    model: Any, rows: list[dict[str, Any]], device: str, desc: str
) -> list[tuple[float, int]]:
    """Sum of negative log-likelihood over label tokens, and their count, for each row."""
    import torch

    batches: list[list[int]] = []
    cur: list[int] = []
    size = 0
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        if cur and size + n > _TOKENS:
            batches.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += n
    if cur:
        batches.append(cur)
    out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    for b in track(batches, desc, unit="batch"):
        ids = [t for i in b for t in rows[i]["input_ids"]]
        pos = [p for i in b for p in range(len(rows[i]["input_ids"]))]
        # Positions whose next token is scored, and which row each belongs to. Only these get
        # logits (logits_to_keep takes an index tensor): the LM head and the log-softmax over a
        # large vocabulary run on ~1/4 of the tokens instead of all of them.
        keep_pos: list[int] = []
        targets: list[int] = []
        owner: list[int] = []
        start = 0
        for k, i in enumerate(b):
            labels = rows[i]["labels"]
            for t in range(len(labels) - 1):
                if labels[t + 1] != -100:
                    keep_pos.append(start + t)
                    targets.append(labels[t + 1])
                    owner.append(k)
            start += len(labels)
        if not keep_pos:
            continue
        with torch.inference_mode():
            logits = model(
                input_ids=torch.tensor([ids], device=device),
                position_ids=torch.tensor([pos], device=device),
                # use_cache=True makes the model skip packed-sequence detection and lets the
                # flattened examples attend to each other (see train.runner.disable_kv_cache)
                use_cache=False,
                logits_to_keep=torch.tensor(keep_pos, device=device),
            ).logits[0]
            lp = torch.log_softmax(logits.float(), dim=-1)
            tok_lp = lp.gather(1, torch.tensor(targets, device=device)[:, None]).squeeze(1)
        sums = torch.zeros(len(b), dtype=torch.float64).index_add_(
            0, torch.tensor(owner), tok_lp.double().cpu()
        )
        counts = torch.bincount(torch.tensor(owner), minlength=len(b))
        for k, i in enumerate(b):
            out[i] = (float(-sums[k]), int(counts[k]))
    return out


def ppl(loss: float) -> float:
    """exp(loss), inf instead of an overflow."""
    return math.exp(loss) if loss < 700 else float("inf")


def task_sums(rows: list[dict[str, Any]], nll: list[Any]) -> dict[str, list[float]]:
    """task -> [summed NLL, tokens, rows], in task order."""
    by_task: dict[str, list[float]] = {}
    for r, (s, n) in zip(rows, nll, strict=True):
        acc = by_task.setdefault(r["task"], [0.0, 0, 0])
        acc[0] += s
        acc[1] += n
        acc[2] += 1
    return dict(sorted(by_task.items()))


@register("held_out")
def held_out(ctx: EvalContext, m: LoadedModel) -> dict[str, Any]:
    rows = sample_rows(ctx)
    nll = nll_per_example(m.model, rows, ctx.device, f"held-out loss [{m.label}]")
    total_nll = sum(s for s, _ in nll)
    total_n = sum(n for _, n in nll)
    if total_n == 0:
        raise StageError("held-out evaluation: the sampled rows have no completion tokens")
    loss = total_nll / total_n
    return {
        "loss": loss,
        "perplexity": ppl(loss),
        "tokens": total_n,
        "examples": len(rows),
        "by_task": {
            t: {
                "loss": v[0] / v[1],
                "perplexity": ppl(v[0] / v[1]),
                "tokens": v[1],
                "examples": v[2],
            }
            for t, v in task_sums(rows, nll).items()
        },
        "per_example": [
            {
                "task": r["task"],
                "source": r.get("source", ""),
                "note_id": r["note_id"],
                "nll": s,
                "tokens": n,
            }
            for r, (s, n) in zip(rows, nll, strict=True)
        ],
    }
