"""Yes/no clinical classification (mention detection: "does this note describe an in-hospital
cardiac arrest?"; MEDEC: "does this text contain a medical error?"), scored two ways, with the
label-collapse check on each.

- ``choice``: the log-probability of each answer word ("yes" / "no", as the chat template puts
  it right after the prompt) -- no parsing, never an invalid answer; the two probabilities,
  renormalized, give P(yes) for AUROC. With ``calibrate: true`` also ``choice_calibrated``:
  contextual calibration (Zhao et al. 2021), P(label | text) / P(label | "N/A") renormalized,
  which removes a constant bias towards one answer.
- ``generate``: a short greedy answer; its first word decides, anything else is ``invalid``
  (counted, and wrong).

Prompts are the training prompts (``ChatFormatter``: same template, same system prompt), so a
model fine-tuned on a ``mention`` task is asked exactly what it learned. Long notes are cut
from the end to fit ``data.max_seq_len`` (the same rule as training).
Metrics: :mod:`clinitune.evaluate.classify` (scikit-learn + the collapse detector).
"""

from __future__ import annotations

import csv
import io
import math
import random
import re
from pathlib import Path
from typing import Any

from clinitune.data.pack import ChatFormatter, generation_prompt, pad_id
from clinitune.data.prepare import read_records
from clinitune.errors import DataError, StageError
from clinitune.evaluate.classify import binary_metrics, collapse_report
from clinitune.evaluate.mcq import jsonl_objects, score_continuations
from clinitune.evaluate.registry import EvalContext, LoadedModel, register
from clinitune.generate import generate_batched
from clinitune.recipe import ClassifySpec

INVALID = "invalid"
CONTENT_FREE = "N/A"


def _read_file(spec: ClassifySpec, path: Path) -> list[tuple[str, str, bool]]:
    """(id, text, gold is positive) per row of a CSV or JSONL file. A gold label in neither
    ``positive_values`` nor ``negative_values`` is an error naming the file, row and field."""
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: byte {e.start} is not valid UTF-8") from None
    rows: list[tuple[int, dict[str, Any]]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(raw, newline=""))
        missing = [
            f
            for f in (spec.text_field, spec.label_field, spec.id_field)
            if f and f not in (reader.fieldnames or [])
        ]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r} (has {reader.fieldnames})")
        rows = [(i, r) for i, r in enumerate(reader, start=2)]  # line 1 is the header
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = list(jsonl_objects(path, raw))
    else:
        raise DataError(f"{path}: expected a .csv or .jsonl file")
    positive = {v.strip().lower() for v in spec.positive_values}
    negative = {v.strip().lower() for v in spec.negative_values}
    if positive & negative:
        raise DataError(
            f"classification {spec.name!r}: {sorted(positive & negative)} are in both "
            "positive_values and negative_values"
        )
    out = []
    for i, r in rows:
        # MEDEC's test file pads with empty rows: skip rows that are empty in every field.
        if not any(str(v).strip() for v in r.values() if v is not None):
            continue
        text, label = r.get(spec.text_field), r.get(spec.label_field)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}: row {i}: field {spec.text_field!r} is missing or empty")
        if label is None or str(label).strip() == "":
            raise DataError(f"{path}: row {i}: field {spec.label_field!r} is missing or empty")
        value = str(label).strip().lower()
        if value not in positive and value not in negative:
            # A label is a short code; anything else (a name, a date, note text: PHI) is not
            # shown, only its length.
            code = re.fullmatch(r"[A-Za-z0-9_.+-]{1,12}", str(label).strip())
            shown = repr(str(label).strip()) if code else f"a {len(value)}-character value"
            raise DataError(
                f"{path}: row {i}: field {spec.label_field!r}: {shown} is not a label "
                f"(positive_values {sorted(positive)}, negative_values {sorted(negative)})"
            )
        rid = str(r.get(spec.id_field, i)) if spec.id_field else str(i)
        out.append((rid, text, value in positive))
    if not out:
        raise DataError(f"{path}: no examples")
    return out


def load_examples(ctx: EvalContext, spec: ClassifySpec) -> list[dict[str, Any]]:
    """Chat records with ``completion`` = the gold answer word, and an ``id``."""
    pos, neg = spec.answers
    if spec.task is not None:
        recs = [r for r in read_records(ctx.layout.prepared, spec.split) if r["task"] == spec.task]
        if not recs:
            raise StageError(
                f"classification {spec.name!r}: no {spec.task!r} records in the prepared "
                f"{spec.split} split"
            )
        golds = {r["completion"].strip().lower() for r in recs}
        if not golds <= {pos.lower(), neg.lower()}:
            raise StageError(
                f"classification {spec.name!r}: task {spec.task!r} answers {sorted(golds)}, "
                f"not the recipe's answers {list(spec.answers)}"
            )
        exs = [{**r, "id": f"{r['source']}:{r['note_id']}"} for r in recs]
    else:
        path = ctx.recipe.resolve_path(spec.path or "")
        question = f"{spec.question} Answer {pos} or {neg}."
        exs = [
            {"id": rid, "instruction": question, "input": text, "completion": pos if y else neg}
            for rid, text, y in _read_file(spec, path)
        ]
    if spec.n is not None and spec.n < len(exs):
        exs = random.Random(f"{ctx.recipe.seed}:{spec.name}").sample(exs, spec.n)
    return exs


def _first_word(text: str) -> str:
    m = re.match(r"\W*([A-Za-z]+)", text)
    return m.group(1).lower() if m else ""


def _softmax2(a: float, b: float) -> float:
    """P(first) from two log-probabilities."""
    m = max(a, b)
    ea, eb = math.exp(a - m), math.exp(b - m)
    return ea / (ea + eb)


@register("classification")
def classification(ctx: EvalContext, m: LoadedModel) -> dict[str, Any]:
    recipe = ctx.recipe
    fmt = ChatFormatter(m.tokenizer, recipe.model.system_prompt, recipe.model.chat_template_kwargs)
    pad = pad_id(m.tokenizer)
    results: dict[str, Any] = {}
    for spec in recipe.evaluate.classification:
        pos, neg = spec.answers
        exs = load_examples(ctx, spec)
        prompts: list[list[int]] = []
        for r in exs:
            ids = generation_prompt(fmt, r, recipe.data.max_seq_len)
            if ids is None:
                raise StageError(f"classification {spec.name!r}: example {r['id']}: cannot fit")
            prompts.append(ids)
        # The answer words as the template continues the prompt (no leading space in chat
        # templates; the plain format also starts the answer right after "Assistant:\n").
        conts = [fmt.encode(pos), fmt.encode(neg)]
        gold = [pos if r["completion"].strip().lower() == pos.lower() else neg for r in exs]
        per: list[dict[str, Any]] = [
            {"id": r["id"], "gold": g} for r, g in zip(exs, gold, strict=True)
        ]
        out: dict[str, Any] = {"n": len(exs), "answers": [pos, neg]}
        if "choice" in spec.methods:
            lps = score_continuations(
                m.model, [(p, conts) for p in prompts], pad, ctx.device, spec.batch_size,
                f"{spec.name} choice [{m.label}]",
            )  # fmt: skip
            p_pos = [_softmax2(a, b) for a, b in lps]
            preds = [pos if p >= 0.5 else neg for p in p_pos]
            out["choice"] = _metrics(gold, preds, p_pos, pos, neg)
            for e, p, y in zip(per, p_pos, preds, strict=True):
                e.update(p_pos=p, choice=y)
            if spec.calibrate:
                cf_ids = generation_prompt(fmt, {**exs[0], "input": CONTENT_FREE},
                                           recipe.data.max_seq_len)  # fmt: skip
                assert cf_ids is not None  # a shorter input than an example that fitted
                (a, b), = score_continuations(m.model, [(cf_ids, conts)], pad, ctx.device, 1,
                                              f"{spec.name} calibration [{m.label}]")  # fmt: skip
                q = _softmax2(a, b)  # P(yes | "N/A")
                cal = [(p / q) / (p / q + (1 - p) / (1 - q)) for p in p_pos]
                cpred = [pos if p >= 0.5 else neg for p in cal]
                out["choice_calibrated"] = {
                    **_metrics(gold, cpred, cal, pos, neg),
                    "content_free_p_positive": q,
                }
                for e, p, y in zip(per, cal, cpred, strict=True):
                    e.update(p_pos_calibrated=p, choice_calibrated=y)
        if "generate" in spec.methods:
            gens = generate_batched(
                m.model, m.tokenizer, prompts, batch_size=spec.batch_size,
                max_new_tokens=spec.max_new_tokens, device=ctx.device,
                desc=f"{spec.name} generate [{m.label}]",
            )  # fmt: skip
            words = [_first_word(m.tokenizer.decode(s, skip_special_tokens=True)) for s, _ in gens]
            gpred = [
                pos if w == pos.lower() else neg if w == neg.lower() else INVALID for w in words
            ]
            out["generate"] = {
                **_metrics(gold, gpred, None, pos, neg),
                "invalid_rate": gpred.count(INVALID) / len(gpred),
            }
            for e, y in zip(per, gpred, strict=True):
                e["generate"] = y
        out["per_example"] = per
        results[spec.name] = out
    return results


def _metrics(
    gold: list[str], pred: list[str], scores: list[float] | None, pos: str, neg: str
) -> dict[str, Any]:
    """Binary metrics and the collapse check. An invalid answer counts as wrong: for the binary
    metrics it becomes the label opposite to the gold one (so it is never a free true negative);
    the collapse check sees it as its own label."""
    flip = {pos: neg, neg: pos}
    scored = [flip[g] if p == INVALID else p for g, p in zip(gold, pred, strict=True)]
    labels = [pos, neg] + ([INVALID] if INVALID in pred else [])
    return {
        **binary_metrics(gold, scored, positive=pos, scores=scores),
        "collapse": collapse_report(gold, pred, labels=labels),
    }
