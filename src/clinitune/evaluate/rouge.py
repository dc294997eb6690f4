"""Generated notes against the references: ROUGE-1/2/L/Lsum with Google's ``rouge-score``
(stemming on; ACI-Bench's "ROUGE-L" is ROUGE-Lsum: newline-separated summary-level LCS, so notes
keep their line breaks; F-measures x 100), plus BERTScore F1 and a clinical concept F1
(:mod:`clinitune.evaluate.semantic`), averaged over examples, per task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clinitune.errors import StageError
from clinitune.evaluate.registry import EvalContext, LoadedModel, register
from clinitune.evaluate.semantic import note_scores
from clinitune.generate import read_generations

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge_scores(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    return [
        {k: v.fmeasure * 100 for k, v in scorer.score(ref, pred).items()}
        for pred, ref in zip(predictions, references, strict=True)
    ]


def load_generations(ctx: EvalContext, label: str) -> tuple[Path, list[dict[str, Any]]]:
    """The model's generations file and its rows; a missing or empty file is an error."""
    path = ctx.layout.generations / f"{label}.jsonl"
    if not path.exists():
        raise StageError(f"{path} not found: run `clinitune generate` first")
    gens = read_generations(path)
    if not gens:
        raise StageError(f"{path} is empty: no generations to score")
    return path, gens


@register("rouge", needs_model=False)
def rouge(ctx: EvalContext, m: LoadedModel) -> dict[str, Any]:
    _, gens = load_generations(ctx, m.label)
    preds, refs = [g["prediction"] for g in gens], [g["reference"] for g in gens]
    scores = rouge_scores(preds, refs)
    extra, info = note_scores(preds, refs, ctx.recipe.evaluate.generation, ctx.device)
    for s, e in zip(scores, extra, strict=True):
        s.update(e)
    keys = [k for k in scores[0] if k in ROUGE_TYPES or k in ("concept_f1", "bertscore_f1")]
    by_task: dict[str, dict[str, Any]] = {}
    for task in sorted({g["task"] for g in gens}):
        idx = [i for i, g in enumerate(gens) if g["task"] == task]
        by_task[task] = {k: sum(scores[i][k] for i in idx) / len(idx) for k in keys}
        by_task[task]["examples"] = len(idx)
        by_task[task]["stopped_rate"] = sum(gens[i]["stopped"] for i in idx) / len(idx)
        by_task[task]["mean_new_tokens"] = sum(gens[i]["new_tokens"] for i in idx) / len(idx)
    overall = {k: sum(s[k] for s in scores) / len(scores) for k in keys}
    return {
        **overall,
        "examples": len(gens),
        "scorers": info,
        "by_task": by_task,
        "per_example": [
            {"task": g["task"], "source": g["source"], "note_id": g["note_id"], **s}
            for g, s in zip(gens, scores, strict=True)
        ],
    }
