"""Generated notes against the references: ROUGE-1/2/L/Lsum with Google's ``rouge-score``
(stemming on; ACI-Bench's "ROUGE-L" is ROUGE-Lsum: newline-separated summary-level LCS, so notes
keep their line breaks; F-measures x 100), plus BERTScore F1 and a clinical concept F1
(:mod:`clinitune.evaluate.semantic`), averaged over examples, per task. Full notes (references
with two or more of ACI-Bench's four divisions: subjective, objective_exam, objective_results,
assessment_and_plan) are also scored division by division, as ACI-Bench's
``evaluate_fullnote.py`` does: reference and output are split by the same section tagger as
``prepare``, a division missing from a text is the marker ``#####EMPTY#####`` (so one missing
from both scores 100, and from one side only ~0), and each division is averaged over all the
full notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clinitune.data.sections import ACI_DIVISIONS, build_lexicon, division_texts
from clinitune.errors import StageError
from clinitune.evaluate.registry import EvalContext, LoadedModel, register
from clinitune.evaluate.semantic import mean_defined, note_scores
from clinitune.generate import read_generations
from clinitune.run import read_manifest

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge_scores(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    return [
        {k: v.fmeasure * 100 for k, v in scorer.score(ref, pred).items()}
        for pred, ref in zip(predictions, references, strict=True)
    ]


EMPTY_TAG = "#####EMPTY#####"  # ACI-Bench's stand-in for a division a text lacks


def division_scores(
    predictions: list[str], references: list[str], lexicon: Any = None
) -> dict[str, dict[str, Any]]:
    """ROUGE per ACI-Bench division over the full-note pairs (references with >= 2 divisions),
    missing divisions as :data:`EMPTY_TAG` on either side; {} when there are no full notes."""
    pairs = []
    for p, r in zip(predictions, references, strict=True):
        ref = division_texts(r, lexicon=lexicon)
        if sum(bool(t) for t in ref.values()) >= 2:
            pairs.append((division_texts(p, lexicon=lexicon), ref))
    out: dict[str, dict[str, Any]] = {}
    if not pairs:
        return out
    for div in ACI_DIVISIONS:
        sc = rouge_scores([p[div] or EMPTY_TAG for p, _ in pairs],
                          [r[div] or EMPTY_TAG for _, r in pairs])  # fmt: skip
        out[div] = {k: sum(x[k] for x in sc) / len(sc) for k in ROUGE_TYPES}
        out[div]["examples"] = len(pairs)
        out[div]["missing_in_reference"] = sum(not r[div] for _, r in pairs)
        out[div]["missing_in_output"] = sum(not p[div] for p, _ in pairs)
    return out


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
    lexicon = build_lexicon(ctx.recipe.data.section_headers)
    by_task: dict[str, dict[str, Any]] = {}
    for task in sorted({g["task"] for g in gens}):
        idx = [i for i, g in enumerate(gens) if g["task"] == task]
        by_task[task] = {k: mean_defined(scores[i][k] for i in idx) for k in keys}
        by_task[task]["examples"] = len(idx)
        by_task[task]["stopped_rate"] = sum(gens[i]["stopped"] for i in idx) / len(idx)
        by_task[task]["mean_new_tokens"] = sum(gens[i]["new_tokens"] for i in idx) / len(idx)
        divisions = division_scores([preds[i] for i in idx], [refs[i] for i in idx], lexicon)
        if divisions:
            by_task[task]["divisions"] = divisions
    overall = {k: mean_defined(s[k] for s in scores) for k in keys}  # skips undefined (None)
    # sampled records left out at generation (reference longer than data.max_seq_len): the
    # averages cover the rest only, and the report says so
    counts = (read_manifest(ctx.layout.generations / m.label) or {}).get("counts", {})
    return {
        **overall,
        "examples": len(gens),
        "dropped_reference_too_long": counts.get("dropped_reference_too_long", 0),
        "scorers": info,
        "by_task": by_task,
        "per_example": [
            {"task": g["task"], "source": g["source"], "note_id": g["note_id"], **s}
            for g, s in zip(gens, scores, strict=True)
        ],
    }
