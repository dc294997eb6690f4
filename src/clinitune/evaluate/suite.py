"""``clinitune evaluate``: run every enabled evaluation for each model, compare with the first
model (the baseline, ``base`` by default), write ``<run>/eval/metrics.json`` and per-example
values (``<run>/eval/per_example/<model>.json``).

Generations are produced first (``generate.py``; skipped when up to date), one model in memory
at a time.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinitune.errors import StageError

# Import evaluation modules so they register themselves.
from clinitune.evaluate import (  # noqa: F401
    diagnosis,
    heldout,
    mcq,
    mention,
    perplexity,
    rouge,
    rubric,
)
from clinitune.evaluate.mention import INVALID
from clinitune.evaluate.registry import EVALUATIONS, EvalContext, LoadedModel
from clinitune.evaluate.stats import (
    accuracy_comparison,
    bootstrap_ci,
    paired_bootstrap_binary,
    paired_bootstrap_mean,
    paired_bootstrap_ratio,
    wilson_ci,
)
from clinitune.generate import generate_for_model, resolve_eval_models
from clinitune.models import load_model, load_tokenizer, pick_device
from clinitune.recipe import Recipe
from clinitune.run import (
    RunLayout,
    fingerprint,
    is_up_to_date,
    read_manifest,
    sha256_file,
    write_json,
    write_manifest,
)


@dataclass
class EvalResult:
    metrics_path: Path
    metrics: dict[str, Any]
    skipped: bool


def enabled_evaluations(recipe: Recipe) -> list[str]:
    ev = recipe.evaluate
    names = []
    if ev.held_out.enabled:
        names.append("held_out")
    if ev.generation.enabled:
        names.append("rouge")
        if ev.rubric.enabled:
            names.append("rubric")
    if ev.perplexity.enabled:
        names.append("perplexity")
    if ev.mcq:
        names.append("mcq")
    if ev.classification:
        names.append("classification")
    if ev.diagnosis:
        names.append("diagnosis")
    return names


def evaluate(recipe: Recipe, layout: RunLayout, *, force: bool = False) -> EvalResult:
    refs = resolve_eval_models(recipe, layout)
    prep = read_manifest(layout.prepared)
    if prep is None:
        raise StageError(f"{layout.prepared} has no manifest: run `clinitune prepare` first")
    cfg = {
        "evaluate": recipe.evaluate.model_dump(mode="json"),
        "seed": recipe.seed,
        "model": recipe.model.model_dump(mode="json", exclude={"name", "revision"}),
        "max_seq_len": recipe.data.max_seq_len,
    }
    bench = {m.name: sha256_file(recipe.resolve_path(m.path)) for m in recipe.evaluate.mcq}
    for m in recipe.evaluate.mcq:
        if m.fewshot_path:
            bench[f"{m.name}:fewshot"] = sha256_file(recipe.resolve_path(m.fewshot_path))
    for c in recipe.evaluate.classification:
        if c.path is not None:
            bench[f"classification:{c.name}"] = sha256_file(recipe.resolve_path(c.path))
    fp = fingerprint("evaluate", cfg, bench, [prep["fingerprint"], *(r.fingerprint for r in refs)])
    if not force and layout.metrics.exists() and is_up_to_date(layout.evaluation, fp):
        import json

        return EvalResult(layout.metrics, json.loads(layout.metrics.read_text()), True)
    names = enabled_evaluations(recipe)
    device = pick_device()
    ctx = EvalContext(recipe, layout, device)
    per_model: dict[str, dict[str, Any]] = {}
    per_example: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    for ref in refs:
        if "rouge" in names:
            t0 = time.perf_counter()
            generate_for_model(recipe, layout, ref, force=force)
            timings[f"generate:{ref.label}"] = round(time.perf_counter() - t0, 2)
        model = None
        if any(EVALUATIONS[n][1] for n in names):
            model = load_model(
                ref.path,
                dtype=recipe.model.dtype,
                attn=recipe.model.attn_implementation,
                device=device,
            ).eval()
        loaded = LoadedModel(ref.label, ref.path, model, load_tokenizer(ref.path))
        res: dict[str, Any] = {}
        ex: dict[str, Any] = {}
        for n in names:
            t0 = time.perf_counter()
            out = EVALUATIONS[n][0](ctx, loaded)
            timings[f"{n}:{ref.label}"] = round(time.perf_counter() - t0, 2)
            res[n], ex[n] = _split_per_example(out)
        per_model[ref.label] = res
        per_example[ref.label] = ex
        del model, loaded
        gc.collect()
    for label in per_model:
        per_model[label]["ci95"] = model_cis(per_model[label], per_example[label], recipe.seed)
    positives = {
        name: next(v["positive"] for v in res.values() if isinstance(v, dict) and "positive" in v)
        for name, res in per_model[refs[0].label].get("classification", {}).items()
        if any(isinstance(v, dict) and "positive" in v for v in res.values())
    }
    metrics = {
        "recipe": recipe.name,
        "models": {r.label: {"path": str(r.path)} | per_model[r.label] for r in refs},
        "baseline": refs[0].label,
        "comparisons": {
            r.label: compare(
                per_example[refs[0].label], per_example[r.label], recipe.seed, positives
            )
            for r in refs[1:]
        },
        "timings_s": timings,
    }
    layout.evaluation.mkdir(parents=True, exist_ok=True)
    for label, ex in per_example.items():
        write_json(layout.evaluation / "per_example" / f"{label}.json", ex)
    write_json(layout.metrics, metrics)
    write_manifest(
        layout.evaluation,
        stage="evaluate",
        fp=fp,
        config=cfg,
        inputs={r.label: str(r.path) for r in refs},
        outputs=[layout.metrics],
    )
    return EvalResult(layout.metrics, metrics, False)


def _split_per_example(out: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Separate per-example lists (kept in per_example files) from summary metrics."""
    if "per_example" in out:
        rest = {k: v for k, v in out.items() if k != "per_example"}
        return rest, out["per_example"]
    summary, ex = {}, {}
    for k, v in out.items():
        if isinstance(v, dict) and "per_example" in v:
            summary[k] = {kk: vv for kk, vv in v.items() if kk != "per_example"}
            ex[k] = v["per_example"]
        else:
            summary[k] = v
    return summary, ex


def model_cis(res: dict[str, Any], ex: dict[str, Any], seed: int) -> dict[str, list[float]]:
    """95% intervals of one model's headline metrics (error bars of the report's plot):
    bootstrap over examples for losses and note scores, Wilson for accuracies."""
    out: dict[str, list[float]] = {}
    for key in ("held_out", "perplexity"):
        if ex.get(key):
            nll = [x["nll"] for x in ex[key]]
            out[f"{key}.loss"] = list(bootstrap_ci(nll, [x["tokens"] for x in ex[key]], seed=seed))
    for k in ("rougeLsum", "concept_f1", "bertscore_f1"):
        vals = [x[k] for x in ex.get("rouge", []) if x.get(k) is not None]  # None: undefined
        if vals:
            out[f"rouge.{k}"] = list(bootstrap_ci(vals, seed=seed))
    for name, r in res.get("mcq", {}).items():
        out[f"mcq.{name}.acc"] = list(wilson_ci(round(r["acc"] * r["n"]), r["n"]))
    for name, r in res.get("classification", {}).items():
        for method in ("choice", "choice_calibrated", "generate"):
            if method in r:
                g = r[method]
                out[f"classification.{name}.{method}.accuracy"] = list(
                    wilson_ci(round(g["accuracy"] * g["n"]), g["n"])
                )
    return out


def _keyed(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> dict[tuple, dict[str, Any]]:
    """Rows by their identity fields plus their occurrence (a long note held out in several
    chunks, a note with several sections), so that every row pairs with the same row of the
    other model -- both score the same seeded sample in the same order."""
    seen: dict[tuple, int] = {}
    out = {}
    for x in rows:
        ident = tuple(str(x.get(f, "")) for f in fields)
        k = seen[ident] = seen.get(ident, -1) + 1
        out[(*ident, k)] = x
    return out


def compare(
    base: dict[str, Any],
    other: dict[str, Any],
    seed: int,
    positives: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Paired comparisons of ``other`` against ``base`` on identical examples: a paired
    bootstrap for losses (token-weighted, overall and per task), note scores (overall and per
    task) and the rubric; McNemar's exact test with the bootstrap interval of the difference for
    accuracies; a paired bootstrap of each binary metric for the yes/no tasks (``positives``:
    the positive answer of each, from the base model's summary)."""
    out: dict[str, Any] = {}
    for key, name in (("held_out", "held_out_loss"), ("perplexity", "perplexity_loss")):
        if base.get(key) and other.get(key):  # token-weighted NLL per example
            a = _keyed(base[key], ("task", "source", "note_id"))
            b = _keyed(other[key], ("task", "source", "note_id"))
            keys = sorted(set(a) & set(b))

            def ratio(ks: list[Any], a: Any = a, b: Any = b) -> dict[str, Any]:
                return paired_bootstrap_ratio(
                    [a[k]["nll"] for k in ks],
                    [a[k]["tokens"] for k in ks],
                    [b[k]["nll"] for k in ks],
                    [b[k]["tokens"] for k in ks],
                    seed=seed,
                )

            if keys:
                out[name] = ratio(keys)
                tasks = sorted({k[0] for k in keys})
                if len(tasks) > 1:
                    out[f"{name}_by_task"] = {
                        t: ratio([k for k in keys if k[0] == t]) for t in tasks
                    }
    for key, metrics in (
        ("rouge", ("rouge1", "rouge2", "rougeL", "rougeLsum", "concept_f1", "bertscore_f1")),
        ("rubric", ("missed_rate", "incorrect_rate", "irrelevant_rate")),
    ):
        if key in base and key in other:  # per generated note
            a = _keyed(base[key], ("task", "source", "note_id"))
            b = _keyed(other[key], ("task", "source", "note_id"))
            keys = sorted(set(a) & set(b))

            def means(ks: list[Any], a: Any = a, b: Any = b, metrics: Any = metrics) -> Any:
                res = {}
                for k in metrics:
                    # notes where the metric is undefined for either model are left out
                    both = [i for i in ks if a[i].get(k) is not None and b[i].get(k) is not None]
                    if both:
                        res[k] = paired_bootstrap_mean(
                            [a[i][k] for i in both], [b[i][k] for i in both], seed=seed
                        )
                return res

            if keys:
                out[key] = means(keys)
                tasks = sorted({k[0] for k in keys})
                if key == "rouge" and len(tasks) > 1:
                    out["rouge_by_task"] = {t: means([k for k in keys if k[0] == t]) for t in tasks}
    if "mcq" in base and "mcq" in other:
        out["mcq"] = {}
        for name in base["mcq"]:
            if name not in other["mcq"]:
                continue
            a = {x["qid"]: x for x in base["mcq"][name]}
            b = {x["qid"]: x for x in other["mcq"][name]}
            keys = sorted(set(a) & set(b))
            out["mcq"][name] = accuracy_comparison(
                [a[k]["correct"] for k in keys], [b[k]["correct"] for k in keys], seed=seed
            )
            if keys and "correct_norm" in a[keys[0]] and "correct_norm" in b[keys[0]]:
                out["mcq"][f"{name}.acc_norm"] = accuracy_comparison(
                    [a[k]["correct_norm"] for k in keys],
                    [b[k]["correct_norm"] for k in keys],
                    seed=seed,
                )
    if "classification" in base and "classification" in other:
        out["classification"] = {}
        for name, exs in base["classification"].items():
            if name not in other["classification"]:
                continue
            a = {x["id"]: x for x in exs}
            b = {x["id"]: x for x in other["classification"][name]}
            keys = sorted(set(a) & set(b))
            res = {}
            for method, score in (("choice", "p_pos"), ("choice_calibrated", "p_pos_calibrated"),
                                  ("generate", None)):  # fmt: skip
                if not keys or method not in a[keys[0]] or method not in b[keys[0]]:
                    continue
                res[method] = accuracy_comparison(
                    [a[k][method] == a[k]["gold"] for k in keys],
                    [b[k][method] == b[k]["gold"] for k in keys],
                    seed=seed,
                )
                pos = (positives or {}).get(name)
                if pos is not None:
                    gold = [a[k]["gold"] == pos for k in keys]
                    # an invalid answer counts as wrong (as in the summary's binary metrics)
                    pa, pb = (
                        [x[k][method] == pos if x[k][method] != INVALID else not g
                         for k, g in zip(keys, gold, strict=True)]
                        for x in (a, b)
                    )  # fmt: skip
                    with_scores = score is not None and score in a[keys[0]] and score in b[keys[0]]
                    res[method]["metrics"] = paired_bootstrap_binary(
                        gold,
                        pa,
                        pb,
                        [a[k][score] for k in keys] if with_scores else None,
                        [b[k][score] for k in keys] if with_scores else None,
                        seed=seed,
                    )
            out["classification"][name] = res
    if "diagnosis" in base and "diagnosis" in other:
        out["diagnosis"] = {}
        for name, exs in base["diagnosis"].items():
            if name not in other["diagnosis"]:
                continue
            a = {x["id"]: x for x in exs}
            b = {x["id"]: x for x in other["diagnosis"][name]}
            res = {}
            for crit in (f"{at}_{c}" for at in ("top1", "topk")
                         for c in ("code_exact", "code_category", "description")):  # fmt: skip
                keys = sorted(k for k in set(a) & set(b) if a[k][crit] is not None)
                if keys:
                    res[crit] = accuracy_comparison(
                        [a[k][crit] for k in keys], [b[k][crit] for k in keys], seed=seed
                    )
            out["diagnosis"][name] = res
    return out
