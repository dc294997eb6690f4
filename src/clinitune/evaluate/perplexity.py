"""Perplexity of whole held-out documents with a sliding window (long notes).

Each document (a ``cpt`` record of the split: its text, tokenized with the model's tokenizer,
EOS appended as in training) is cut into windows of ``window`` tokens starting every ``stride``
tokens; each window scores only the tokens the previous one did not, with the rest as context.
So every token after the first is scored exactly once, with at least ``window - stride`` tokens
of earlier context (fewer only at the start of the document; always at least one): the recipe
of the Hugging Face "Perplexity of fixed-length models" guide. The windows become rows for
:func:`clinitune.evaluate.heldout.nll_per_example` (padding-free micro-batches), and their sums
are added back per document. Perplexity = exp(total NLL / total scored tokens), token-weighted
over documents.
"""

from __future__ import annotations

from typing import Any

from clinitune.data.pack import ChatFormatter
from clinitune.data.prepare import read_records
from clinitune.errors import StageError
from clinitune.evaluate.heldout import nll_per_example, ppl, task_sums
from clinitune.evaluate.registry import EvalContext, LoadedModel, register
from clinitune.generate import sample_per_task

IGNORE = -100


def windows(ids: list[int], window: int, stride: int) -> list[dict[str, list[int]]]:
    """Rows (input_ids, labels) covering ``ids``: every token but the first is a label exactly
    once; a row has at most ``window`` tokens."""
    if stride > window:
        raise ValueError(f"stride ({stride}) must not exceed the window ({window})")
    rows = []
    prev_end = 1  # token 0 has no context: never scored
    begin = 0
    while prev_end < len(ids):
        end = min(begin + window, len(ids))
        span = ids[begin:end]
        new = end - prev_end  # tokens this window scores: the last `new` of the span
        rows.append({"input_ids": span, "labels": [IGNORE] * (len(span) - new) + span[-new:]})
        prev_end = end
        if end == len(ids):
            break
        # A window's first token has no context inside it, so the next window starts at least
        # one token before the first token it scores (stride == window becomes window - 1).
        begin = min(begin + stride, prev_end - 1)
    return rows


def sample_documents(ctx: EvalContext) -> list[dict[str, Any]]:
    spec = ctx.recipe.evaluate.perplexity
    recs = [r for r in read_records(ctx.layout.prepared, spec.split) if r["kind"] == "text"]
    return sample_per_task(recs, spec.tasks, spec.max_examples, f"{ctx.recipe.seed}:ppl")


@register("perplexity")
def perplexity(ctx: EvalContext, m: LoadedModel) -> dict[str, Any]:
    spec = ctx.recipe.evaluate.perplexity
    window = spec.window or ctx.recipe.data.max_seq_len
    stride = spec.stride or max(1, window // 2)
    if stride > window:
        raise StageError(f"evaluate.perplexity: stride {stride} exceeds the window {window}")
    docs = sample_documents(ctx)
    if not docs:
        return {
            "skipped": f"no raw-text (cpt) records in the {spec.split} split (a cpt task over "
            "the notes in data.tasks provides them; it need not be trained on)",
            "window": window,
            "stride": stride,
        }
    fmt = ChatFormatter(m.tokenizer)
    rows: list[dict[str, Any]] = []
    owner: list[int] = []
    lengths = []
    for d, toks in enumerate(fmt.encode_many([r["text"] for r in docs])):
        ids = [*toks, m.tokenizer.eos_token_id]
        lengths.append(len(ids))
        for w in windows(ids, window, stride):
            rows.append(w)
            owner.append(d)
    nll = nll_per_example(m.model, rows, ctx.device, f"perplexity [{m.label}]")
    per_doc = [[0.0, 0] for _ in docs]
    for d, (s, n) in zip(owner, nll, strict=True):
        per_doc[d][0] += s
        per_doc[d][1] += n
    total = sum(s for s, _ in per_doc)
    n_tok = sum(int(n) for _, n in per_doc)
    return {
        "perplexity": ppl(total / n_tok),
        "loss": total / n_tok,
        "tokens": n_tok,
        "documents": len(docs),
        "window": window,
        "stride": stride,
        "documents_longer_than_window": sum(n > window for n in lengths),
        "by_task": {
            t: {"perplexity": ppl(v[0] / v[1]), "tokens": v[1], "documents": v[2]}
            for t, v in task_sums(docs, per_doc).items()
        },
        "per_example": [
            {
                "task": r["task"],
                "source": r.get("source", ""),
                "note_id": r["note_id"],
                "nll": s,
                "tokens": n,
            }
            for r, (s, n) in zip(docs, per_doc, strict=True)
        ],
    }
