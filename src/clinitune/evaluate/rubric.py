"""HEAL's note rubric -- missed, incorrect and irrelevant information -- automated.

HEAL's physicians counted, per generated note: information of the reference the note *missed*,
*incorrect* information (not supported by, or contradicting, the encounter), and *irrelevant*
information (true to the encounter but not in the reference). Without a judge model this module
computes the **concept-level** version (the issue's fallback, labelled as such in the report):

- a *concept* is a content word (stop words removed, light plural stemming) or a number with
  its unit ("5 mg" -> ``5mg``), marked ``no:`` inside a negation scope ("denies chest pain" ->
  ``no:chest``, ``no:pain``), so a flipped negation, laterality or dose is a different concept;
  questions ("Any fever?") assert nothing and are skipped;
- missed     = reference concepts absent from the output          (rate: / reference concepts)
- incorrect  = output concepts in neither the source nor reference (rate: / output concepts)
- irrelevant = output concepts in the source but not the reference (rate: / output concepts)

A rate with nothing to divide by is undefined (``None``), never 0: an output with no concepts
(or, with a judge, no claims) has no incorrect or irrelevant rate -- an empty note is not a
perfect one -- and a reference with none has no missed rate. :func:`summarize` averages each
rate over the notes where it is defined, counts the others (``empty_outputs``,
``empty_references``), and reports beside these per-note means (``mean_*_rate``, each note
weighing the same) the pooled ``micro_*_rate`` (summed counts / summed concepts or claims).

It is lexical: a paraphrase counts as missed + incorrect, and a contradiction is caught only
when it changes a word, number or negation. ``benchmarks/rubric_validation.py`` measures how
well it tracks the human fact-level scores of MTS-Dialog's correlation study (Spearman) and how
it responds to perturbations (drop a medication, flip a laterality, change a dose).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from clinitune.errors import StageError
from clinitune.evaluate.negation import CUES, PUNCT, negated
from clinitune.evaluate.registry import EvalContext, LoadedModel, register
from clinitune.evaluate.rouge import load_generations
from clinitune.evaluate.semantic import mean_defined
from clinitune.progress import track

# scikit-learn's English stop words, minus words that carry clinical meaning here
_KEEP = {"no", "not", "nor", "none", "never", "without", "left", "right", "first", "last",
         "front", "back", "side", "bottom", "top", "full", "empty", "ill", "well"}  # fmt: skip
_UNITS = r"(?:mg|mcg|g|kg|ml|l|mmhg|bpm|%|cm|mm|units?|iu|meq|mmol|days?|weeks?|months?|years?|hours?|times?|tabs?|tablets?|puffs?)"  # noqa: E501
_TOKEN = re.compile(rf"\d+(?:\.\d+)?\s*{_UNITS}\b|\d+(?:\.\d+)?|[a-z][a-z'-]*|[.;:!?\n]", re.I)


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) - _KEEP


_STOP = _stop_words()


def _stem(w: str) -> str:
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def concepts(text: str) -> set[str]:
    """The text's concepts (see the module docstring). Questions assert nothing ("Any fever?"
    in a dialogue is not evidence of fever): sentences ending with "?" are left out."""
    out: set[str] = set()
    sent: set[str] = set()  # concepts of the current sentence
    toks = [m.group(0).lower() for m in _TOKEN.finditer(text or "")]
    for tok, neg in zip(toks, negated(toks), strict=True):
        if tok in PUNCT:
            if tok != "?":
                out |= sent
            sent = set()
            continue
        if tok in CUES:
            continue
        if tok[0].isdigit():
            c = re.sub(r"\s+", "", tok)
        else:
            tok = tok.strip("'-")
            c = _stem(tok)
            if len(tok) < 2 or tok in _STOP or c in _STOP:
                continue
        sent.add("no:" + c if neg else c)
    return out | sent


def rubric(source: str, reference: str, output: str) -> dict[str, float | int | None]:
    """Missed / incorrect / irrelevant concept counts and rates for one note (a rate is None
    when its denominator is 0)."""
    src, ref, out = concepts(source), concepts(reference), concepts(output)
    missed = ref - out
    incorrect = out - src - ref
    irrelevant = (out & src) - ref
    return {
        "reference_concepts": len(ref),
        "output_concepts": len(out),
        "missed": len(missed),
        "incorrect": len(incorrect),
        "irrelevant": len(irrelevant),
        "missed_rate": len(missed) / len(ref) if ref else None,
        "incorrect_rate": len(incorrect) / len(out) if out else None,
        "irrelevant_rate": len(irrelevant) / len(out) if out else None,
    }


# rate -> (its count, the side whose concepts or claims are the denominator)
RATES = {
    "missed_rate": ("missed", "reference"),
    "incorrect_rate": ("incorrect", "output"),
    "irrelevant_rate": ("irrelevant", "output"),
}


def _units(row: dict[str, Any], side: str) -> int:
    """The row's reference or output concepts (concept level) or claims (judge)."""
    return int(row[f"{side}_concepts"] if f"{side}_concepts" in row else row[f"{side}_claims"])


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, float | int | None]:
    """Per-note means of the counts; per rate, its mean over the notes where it is defined
    (None when it is defined for none) and the micro average (summed counts / summed units);
    how many notes had an empty output or reference (undefined rates). See the module
    docstring."""
    rows = list(rows)
    if not rows:
        return {}
    out: dict[str, float | int | None] = {}
    for k, (count, side) in RATES.items():
        out[f"mean_{count}"] = sum(r[count] for r in rows) / len(rows)
        out[f"mean_{k}"] = mean_defined(r[k] for r in rows)
        den = sum(_units(r, side) for r in rows)
        out[f"micro_{k}"] = sum(r[count] for r in rows) / den if den else None
    out["empty_outputs"] = sum(r["incorrect_rate"] is None for r in rows)
    out["empty_references"] = sum(r["missed_rate"] is None for r in rows)
    return out


@register("rubric", needs_model=False)
def rubric_eval(ctx: EvalContext, m: LoadedModel) -> dict[str, Any]:
    from clinitune.data.prepare import read_records

    path, gens = load_generations(ctx, m.label)
    split = ctx.recipe.evaluate.generation.split
    recs = read_records(ctx.layout.prepared, split)
    src = {(r["task"], r["source"], r["note_id"]): r for r in recs}
    spec = ctx.recipe.evaluate.rubric
    judge = None
    if spec.judge is not None:
        from clinitune.evaluate.judge import Judge, describe, judged_rubric

        judge = Judge(spec.judge, ctx.device)
    per = []
    for g in track(gens, f"rubric [{m.label}]", unit="note"):
        r = src.get((g["task"], g["source"], g["note_id"]))
        if r is None:
            raise StageError(
                f"{path}: generation for {g['task']}/{g['note_id']} has no record in the "
                f"prepared {split} split (prepare changed after generate? rerun generate)"
            )
        source = r.get("input") or ""
        if judge is not None:
            what = f"{m.label}:{g['task']}/{g['note_id']}"
            counts = judged_rubric(judge, source, g["reference"], g["prediction"], what)
        else:
            counts = rubric(source, g["reference"], g["prediction"])
        per.append({"task": g["task"], "source": g["source"], "note_id": g["note_id"], **counts})
    by_task = {
        t: {
            **summarize(x for x in per if x["task"] == t),
            "examples": sum(x["task"] == t for x in per),
        }
        for t in sorted({x["task"] for x in per})
    }
    if judge is not None:
        method = describe(spec.judge)
        extra = {"judge_calls": judge.calls, "judge_retries": judge.retried}
    else:
        method = "concept-level (no judge model configured): lexical concepts with negation"
        extra = {}
    return {
        "method": method,
        **extra,
        **summarize(per),
        "examples": len(per),
        "by_task": by_task,
        "per_example": per,
    }
