"""``clinitune report``: one self-contained ``report.html`` (plots embedded as PNG) from the run's
artifacts: ``eval/metrics.json``, the stages' ``train_log.jsonl`` and the prepare manifest.

Generated text is derived from PHI: it appears only when ``report.include_examples > 0``.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from clinitune.errors import StageError
from clinitune.recipe import Recipe
from clinitune.run import RunLayout, atomic_write_text, library_versions, read_manifest


def png_base64(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def loss_plot(stage_logs: dict[str, list[dict[str, Any]]]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(stage_logs.values()):
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))
    offset = 0
    for name, rows in stage_logs.items():
        pts = [(r["step"] + offset, r["loss"]) for r in rows if "loss" in r]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, alpha=0.35, lw=1)
        w = max(1, len(ys) // 8)
        smooth = [
            sum(ys[max(0, i - w + 1) : i + 1]) / len(ys[max(0, i - w + 1) : i + 1])
            for i in range(len(ys))
        ]
        ax.plot(xs, smooth, lw=2, label=f"{name} (moving avg, w={w})")
        offset = xs[-1]
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (completion tokens)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png_base64(fig)


def bars_plot(metrics: dict[str, Any]) -> str | None:
    """One panel per headline metric, a bar per model with its 95% interval (``ci95``:
    bootstrap over examples, Wilson for accuracies)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(metrics["models"])
    ms = [metrics["models"][m] for m in models]

    def get(d: dict[str, Any], path: str) -> Any:
        for k in path.split("/"):
            d = d[k]
        return d

    # (title, value path in a model's metrics, ci95 key)
    cands = [
        ("held-out loss (lower is better)", "held_out/loss", "held_out.loss"),
        ("document NLL/token (lower is better)", "perplexity/loss", "perplexity.loss"),
        ("ROUGE-Lsum", "rouge/rougeLsum", "rouge.rougeLsum"),
        ("concept F1", "rouge/concept_f1", "rouge.concept_f1"),
        ("BERTScore F1", "rouge/bertscore_f1", "rouge.bertscore_f1"),
    ]
    cands += [(f"{n} acc", f"mcq/{n}/acc", f"mcq.{n}.acc") for n in ms[0].get("mcq", {})]
    cands += [
        (f"{n} accuracy (choice)", f"classification/{n}/choice/accuracy",
         f"classification.{n}.choice.accuracy")
        for n, r in ms[0].get("classification", {}).items() if "choice" in r
    ]  # fmt: skip
    panels = []
    for title, path, ci_key in cands:
        try:
            vals = [float(get(d, path)) for d in ms]
        except (KeyError, TypeError, ValueError):
            continue
        cis = [d.get("ci95", {}).get(ci_key) for d in ms]
        panels.append((title, vals, cis))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 2.9))
    axes = [axes] if len(panels) == 1 else list(axes)
    colors = ["#9aa5b1", "#2f6fb0", "#3a9a5b", "#c47f2c"]
    for ax, (title, vals, cis) in zip(axes, panels, strict=True):
        err = None
        if all(c is not None for c in cis):
            err = [[v - c[0] for v, c in zip(vals, cis, strict=True)],
                   [c[1] - v for v, c in zip(vals, cis, strict=True)]]  # fmt: skip
        ax.bar(models, vals, color=colors[: len(vals)], yerr=err, capsize=4)
        ax.set_title(title, fontsize=9)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.3g}", ha="left", va="bottom", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return png_base64(fig)


def length_plot(layout: RunLayout, models: list[str]) -> str | None:
    """Distribution of generated note lengths (words) per model, against the references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[int]] = {}
    for m in models:
        p = layout.generations / f"{m}.jsonl"
        if not p.exists():
            continue
        rows = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
        if not rows:
            continue
        series.setdefault("reference", [len(r["reference"].split()) for r in rows])
        series[m] = [len(r["prediction"].split()) for r in rows]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    top = max(max(v) for v in series.values()) or 1
    bins = list(range(0, top + top // 20 + 2, max(1, top // 20)))
    for name, v in series.items():
        ax.hist(v, bins=bins, histtype="step", lw=2 if name == "reference" else 1.5, label=name)
    ax.set_xlabel("words per note")
    ax.set_ylabel("notes")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return png_base64(fig)


def _fmt(x: Any, nd: int = 3) -> str:
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return html.escape(str(x))


def comparison_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric: values per model, and the paired difference vs the baseline."""
    models = list(metrics["models"])
    base = metrics["baseline"]
    rows: list[dict[str, Any]] = []

    def add(name: str, getter: Any, better: str, cmp_getter: Any = None) -> None:
        vals = []
        for m in models:
            try:
                vals.append(getter(metrics["models"][m]))
            except (KeyError, TypeError):
                vals.append(None)
        cmp = {}
        for m in models:
            if m == base or cmp_getter is None:
                continue
            with contextlib.suppress(KeyError, TypeError):
                cmp[m] = cmp_getter(metrics["comparisons"][m])
        rows.append({"name": name, "vals": vals, "better": better, "cmp": cmp})

    mb = metrics["models"][base]
    if "held_out" in mb:
        add(
            "held-out loss (all tasks, token-weighted)",
            lambda d: d["held_out"]["loss"],
            "lower",
            lambda c: c["held_out_loss"],
        )
        add("held-out perplexity", lambda d: d["held_out"]["perplexity"], "lower")
        for t in mb["held_out"]["by_task"]:
            add(
                f"held-out loss · {t}",
                lambda d, t=t: d["held_out"]["by_task"][t]["loss"],
                "lower",
                lambda c, t=t: c["held_out_loss_by_task"][t],
            )
    if mb.get("perplexity", {}).get("perplexity") is not None:
        pp = mb["perplexity"]
        add(
            f"document NLL/token, sliding window {pp['window']}/{pp['stride']} "
            f"({pp['documents']} docs)",
            lambda d: d["perplexity"]["loss"],
            "lower",
            lambda c: c["perplexity_loss"],
        )
        add(
            "document perplexity (sliding window)", lambda d: d["perplexity"]["perplexity"], "lower"
        )
    if "rouge" in mb:
        for k, label in (
            ("rouge1", "ROUGE-1"),
            ("rouge2", "ROUGE-2"),
            ("rougeL", "ROUGE-L (sentence-level; ACI-Bench's ROUGE-L is Lsum)"),
            ("rougeLsum", "ROUGE-Lsum"),
        ):
            add(
                f"{label} (all generations)",
                lambda d, k=k: d["rouge"][k],
                "higher",
                lambda c, k=k: c["rouge"][k],
            )
        sc = mb["rouge"].get("scorers", {})
        if "concept_f1" in mb["rouge"]:
            add(
                "concept F1 (ICD-10-CM terms + drugs; MEDCON proxy)",
                lambda d: d["rouge"]["concept_f1"],
                "higher",
                lambda c: c["rouge"]["concept_f1"],
            )
        if "bertscore_f1" in mb["rouge"]:
            add(
                f"BERTScore F1 ({sc.get('bertscore', 'encoder')})",
                lambda d: d["rouge"]["bertscore_f1"],
                "higher",
                lambda c: c["rouge"]["bertscore_f1"],
            )
        for t in mb["rouge"]["by_task"]:
            add(
                f"ROUGE-Lsum · {t}",
                lambda d, t=t: d["rouge"]["by_task"][t]["rougeLsum"],
                "higher",
                lambda c, t=t: c["rouge_by_task"][t]["rougeLsum"],
            )
            for div, dv in mb["rouge"]["by_task"][t].get("divisions", {}).items():
                add(
                    f"ROUGE-1 / ROUGE-Lsum · {t} · {div} (n={dv['examples']})",
                    lambda d, t=t, div=div: (
                        f"{d['rouge']['by_task'][t]['divisions'][div]['rouge1']:.1f} / "
                        f"{d['rouge']['by_task'][t]['divisions'][div]['rougeLsum']:.1f}"
                    ),
                    "higher",
                )
            add(
                f"stopped by EOS · {t}",
                lambda d, t=t: d["rouge"]["by_task"][t]["stopped_rate"],
                "higher",
            )
    if mb.get("rubric", {}).get("examples"):
        for k, label in (("missed_rate", "missed"), ("incorrect_rate", "incorrect"),
                         ("irrelevant_rate", "irrelevant")):  # fmt: skip
            how = "claims, judge" if "judge_calls" in mb["rubric"] else "concepts, no judge"
            add(
                f"rubric: {label} information, share of {how}",
                lambda d, k=k: d["rubric"][f"mean_{k}"],
                "lower",
                lambda c, k=k: c["rubric"][k],
            )
            add(
                f"rubric: {label} information, pooled over notes (micro)",
                lambda d, k=k: d["rubric"][f"micro_{k}"],
                "lower",
            )
        add(
            "rubric: notes whose output / reference has no concept or claim (rates undefined, "
            "left out)",
            lambda d: (
                f"{d['rubric'].get('empty_outputs', 0)} / {d['rubric'].get('empty_references', 0)}"
            ),
            "lower",
        )
    for name in mb.get("mcq", {}):
        add(
            f"{name} acc (n={mb['mcq'][name]['n']}, chance {mb['mcq'][name]['chance']:.2f})",
            lambda d, n=name: d["mcq"][n]["acc"],
            "higher",
            lambda c, n=name: c["mcq"][n],
        )
        add(
            f"{name} acc_norm",
            lambda d, n=name: d["mcq"][n]["acc_norm"],
            "higher",
            lambda c, n=name: c["mcq"][f"{n}.acc_norm"],
        )
        for subj, sv in mb["mcq"][name].get("by_subject", {}).items():
            add(
                f"{name} · {subj} acc (n={sv['n']})",
                lambda d, n=name, subj=subj: d["mcq"][n]["by_subject"][subj]["acc"],
                "higher",
            )
    for name, res in mb.get("classification", {}).items():
        for method in ("choice", "choice_calibrated", "generate"):
            if method not in res:
                continue
            g = res[method]
            add(
                f"{name} · {method} accuracy (n={g['n']}, prevalence {g['prevalence']:.2f})",
                lambda d, n=name, k=method: d["classification"][n][k]["accuracy"],
                "higher",
                lambda c, n=name, k=method: c["classification"][n][k],
            )
            for key, label in (("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
                               ("mcc", "MCC"), ("balanced_accuracy", "balanced accuracy"),
                               ("auroc", "AUROC")):  # fmt: skip
                if g.get(key) is not None:
                    add(
                        f"{name} · {method} {label}",
                        lambda d, n=name, k=method, key=key: d["classification"][n][k][key],
                        "higher",
                        lambda c, n=name, k=method, key=key: c["classification"][n][k]["metrics"][
                            key
                        ],
                    )
    for name, res in mb.get("diagnosis", {}).items():
        for crit, label in (("code_exact", "exact code"), ("code_category", "code category"),
                            ("description", "description")):  # fmt: skip
            for at in ("top1", "topk"):
                if res.get(f"{at}_{crit}") is None or (at == "topk" and res["top_k"] == 1):
                    continue
                k = 1 if at == "top1" else res["top_k"]
                add(
                    f"{name} · diagnosis {label}, top-{k} (n={res[f'{at}_{crit}_n']})",
                    lambda d, n=name, key=f"{at}_{crit}": d["diagnosis"][n][key],
                    "higher",
                    lambda c, n=name, key=f"{at}_{crit}": c["diagnosis"][n][key],
                )
    return rows


def classification_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model x task x method: metrics, confusion matrix and the collapse verdict."""
    rows = []
    for m, d in metrics["models"].items():
        for name, res in d.get("classification", {}).items():
            for method in ("choice", "choice_calibrated", "generate"):
                if method in res:
                    rows.append({"model": m, "task": name, "method": method, **res[method]})
    return rows


def confusion_plot(rows: list[dict[str, Any]]) -> str | None:
    """One 2x2 confusion matrix per (model, task, method), gold in rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return None
    n = len(rows)
    cols = min(n, 4)
    fig, axes = plt.subplots(
        (n + cols - 1) // cols, cols, figsize=(2.6 * cols, 2.5 * ((n + cols - 1) // cols))
    )
    flat = list(axes.flat) if hasattr(axes, "flat") else [axes]
    for ax, r in zip(flat, rows, strict=False):
        cm = r["confusion"]
        ax.imshow(cm, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(cm[i][j]), ha="center", va="center", fontsize=10)
        pos = r["positive"]
        ax.set_xticks([0, 1], [pos, f"not {pos}"], fontsize=7)
        ax.set_yticks([0, 1], [pos, f"not {pos}"], fontsize=7)
        flag = " · COLLAPSED" if r["collapse"]["collapsed"] else ""
        ax.set_title(f"{r['model']} · {r['task']}\n{r['method']}{flag}", fontsize=8,
                     color="#b42318" if flag else "#222")  # fmt: skip
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("gold", fontsize=7)
    for ax in flat[n:]:
        ax.axis("off")
    fig.tight_layout()
    return png_base64(fig)


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clinitune report · {{ name }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;max-width:1050px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f5f7}td:first-child,th:first-child{text-align:left}
.good{color:#17803d;font-weight:600}.bad{color:#b42318;font-weight:600}.muted{color:#667}
code{background:#f3f5f7;padding:1px 4px;border-radius:3px}
.ex{border:1px solid #ddd;padding:.6em;margin:.6em 0;white-space:pre-wrap;font-size:12px}
</style></head><body>
<h1>clinitune report · {{ name }}</h1>
<p class="muted">{{ created }} · model <code>{{ model }}</code> · device {{ device }} ·
clinitune {{ versions.clinitune }} · torch {{ versions.torch }} · transformers {{ versions.transformers }}</p>

<h2>Base vs tuned</h2>
<p>Baseline: <b>{{ baseline }}</b>. Δ is the paired difference (model − baseline) on the same
examples with a 95% paired-bootstrap interval (McNemar exact test for accuracies);
<span class="good">green</span> = significant improvement, <span class="bad">red</span> = significant
regression, unmarked = not significant at this sample size.</p>
<table><tr><th>metric</th>{% for m in models %}<th>{{ m }}</th>{% endfor %}{% for m in others %}<th>Δ {{ m }} (95% CI)</th>{% endfor %}</tr>
{% for r in rows %}<tr><td>{{ r.name }} <span class="muted">({{ r.better }} is better)</span></td>
{% for v in r.vals %}<td>{{ fmt(v) if v is not none else "—" }}</td>{% endfor %}
{% for m in others %}{% set c = r.cmp.get(m) %}<td class="{{ cls(c, r.better) }}">{% if c %}{{ fmt(c.diff) }}{% if c.ci_low is defined %} [{{ fmt(c.ci_low) }}, {{ fmt(c.ci_high) }}]{% endif %}{% if c.p_value is defined %} (McNemar p={{ fmt(c.p_value) }}){% endif %}{% else %}—{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table>
{% if bars %}<img alt="metrics per model" src="data:image/png;base64,{{ bars }}">
<p class="muted">Bars: each model's value with its 95% interval (bootstrap over examples; Wilson
for accuracies). Overlapping bars do not mean "no difference": the Δ column's paired test is
the comparison.</p>{% endif %}
{% if len_png %}<img alt="generated note lengths" src="data:image/png;base64,{{ len_png }}">
<p class="muted">Lengths of the generated notes and of their references (words; no text shown).</p>{% endif %}

{% if cls_rows %}<h2>Yes/no classification and label collapse</h2>
<p>Choice = log-probability of each answer word (AUROC from its probability); generate = first word
of a greedy answer (anything else is <i>invalid</i> and counts as wrong). <b>Collapse</b>: the model
gives (almost) one answer whatever the input — flagged when its majority share is ≥ 0.95 while the
gold one is not, or when a class is never predicted correctly and accuracy does not beat always
answering the gold majority. The remedy is a short class-balanced task fine-tune
(<code>kind: task</code>, <code>class_balanced: true</code>).</p>
<table><tr><th>model</th><th>task</th><th>method</th><th>n</th><th>acc</th><th>precision</th><th>recall</th><th>F1</th><th>MCC</th><th>bal. acc</th><th>AUROC</th><th>majority answer (share)</th><th>gain over majority</th><th>collapse</th></tr>
{% for r in cls_rows %}<tr><td>{{ r.model }}</td><td>{{ r.task }}</td><td>{{ r.method }}</td><td>{{ r.n }}</td><td>{{ fmt(r.accuracy) }}</td><td>{{ fmt(r.precision) }}</td><td>{{ fmt(r.recall) }}</td><td>{{ fmt(r.f1) }}</td><td>{{ fmt(r.mcc) if r.mcc is not none else "—" }}</td><td>{{ fmt(r.balanced_accuracy) if r.balanced_accuracy is not none else "—" }}</td><td>{{ fmt(r.auroc) if r.auroc is not none else "—" }}</td><td>{{ r.collapse.pred_majority }} ({{ fmt(r.collapse.pred_majority_share, 2) }})</td><td>{{ fmt(r.collapse.gain_over_majority) }}</td><td class="{{ 'bad' if r.collapse.collapsed else '' }}">{{ "COLLAPSED" if r.collapse.collapsed else "no" }}</td></tr>{% endfor %}</table>
{% if cm_png %}<img alt="confusion matrices" src="data:image/png;base64,{{ cm_png }}">{% endif %}
{% endif %}

<h2>Training</h2>
{% if loss_png %}<img alt="training loss" src="data:image/png;base64,{{ loss_png }}">{% else %}<p>No training logs.</p>{% endif %}
<table><tr><th>stage</th><th>steps</th><th>loss, first 5 steps (mean)</th><th>loss, last 5 steps (mean)</th><th>runtime (s)</th><th>tokens/s (est.)</th><th>trainable params</th><th>device / dtype</th></tr>
{% for s in stages %}<tr><td>{{ s.name }}</td><td>{{ s.steps }}</td><td>{{ fmt(s.first_loss_mean5) }}</td><td>{{ fmt(s.last_loss_mean5) }}</td><td>{{ fmt(s.train_runtime_s,1) }}</td><td>{{ fmt(s.tokens_per_s_estimate,1) }}</td><td>{{ "{:,}".format(s.trainable_params) }}</td><td>{{ s.device }} / {{ s.dtype }}</td></tr>{% endfor %}
</table>

<h2>Data</h2>
{% for w in warnings %}<p class="bad">⚠ {{ w }}</p>{% endfor %}
<table><tr><th>source</th><th>rows in</th><th>kept</th><th>quarantined</th><th>reasons</th></tr>
{% for s, c in ingest.items() %}<tr><td>{{ s }}</td><td>{{ c.rows_in }}</td><td>{{ c.kept }}</td><td>{{ c.quarantined }}</td><td>{{ c.quarantine_reasons or "—" }}</td></tr>{% endfor %}</table>
{% if phi and phi.policy != "off" %}<p><b>PHI gate</b> (policy <code>{{ phi.policy }}</code>): {{ phi.notes_with_findings }} of {{ phi.notes_scanned }} notes had possible identifiers;
findings by type: {{ phi.findings_by_type or "none" }}. Counts only: findings are never shown.</p>{% endif %}
{% if dedup and dedup.get("in") is not none %}<p><b>Dedup</b>: {{ dedup.get("in") }} notes in, {{ dedup.get("kept") }} kept,
{{ dedup.get("exact_duplicate", 0) }} exact and {{ dedup.get("near_duplicate", 0) }} near duplicates dropped in {{ dedup.get("clusters", 0) }} clusters
{% if dedup.config %}(Jaccard ≥ {{ dedup.config.threshold }}, {{ dedup.config.shingle }}-word shingles){% endif %}.</p>{% endif %}
<table><tr><th>task ← source</th><th>notes in</th><th>records</th><th>skipped (by reason)</th></tr>
{% for t, c in tasks.items() %}<tr><td>{{ t }}</td><td>{{ c.notes_in }}</td><td>{{ c.records }}</td><td>{{ c.skipped or "—" }}</td></tr>{% endfor %}</table>
<table><tr><th>split</th><th>patients</th><th>records</th><th>tokenized rows</th><th>tokens</th><th>loss tokens</th><th>status</th></tr>
{% for s, c in split.items() %}<tr><td>{{ s }}</td><td>{{ c.patients }}</td><td>{{ c.records }}</td><td>{{ tok[s].rows_out }}</td><td>{{ "{:,}".format(tok[s].tokens) }}</td><td>{{ "{:,}".format(tok[s].loss_tokens) }}</td><td>{{ tok[s].status }}</td></tr>{% endfor %}</table>
<p class="muted">Patients are assigned to splits by a salted hash of their id: no patient is in two splits.
"truncated" records had the end of their prompt cut to fit <code>data.max_seq_len</code>; none are dropped silently.</p>

{% if examples %}<h2>Example generations</h2><p class="bad">Contains text derived from notes: do not share outside your site.</p>
{% for e in examples %}<h3>{{ e.model }} · {{ e.task }} · {{ e.note_id }}</h3><div class="ex"><b>prediction</b>
{{ e.prediction }}</div><div class="ex"><b>reference</b>
{{ e.reference }}</div>{% endfor %}{% endif %}

<h2>Caveats</h2><ul>
<li>With small samples the intervals are wide: read the CIs, not the point estimates.</li>
<li>Held-out loss is measured on completion tokens of the test split with the prompts the model was trained with.</li>
{% for line in mcq_notes %}<li>{{ line }}</li>{% endfor %}
<li>Coloured differences are significant at 5%: by McNemar's exact test for accuracies (the interval shown is the paired bootstrap's, which can disagree near the boundary), by the paired bootstrap interval excluding 0 otherwise.</li>
{% for line in skipped %}<li class="bad">{{ line }}</li>{% endfor %}
{% for k, v in scorers.items() %}<li>Note scores, {{ k }}: {{ v }}.</li>{% endfor %}
</ul>
<p class="muted">Machine-readable: <code>eval/metrics.json</code>; per-example values: <code>eval/per_example/</code>.</p>
</body></html>"""


def _cls(c: dict[str, Any] | None, better: str) -> str:
    if not c or not c.get("significant"):
        return ""
    improved = (c["diff"] < 0) if better == "lower" else (c["diff"] > 0)
    return "good" if improved else "bad"


def write_report(recipe: Recipe, layout: RunLayout) -> Path:
    if not layout.metrics.exists():
        raise StageError(f"{layout.metrics} not found: run `clinitune evaluate` first")
    metrics = json.loads(layout.metrics.read_text())
    prep = read_manifest(layout.prepared) or {}
    counts = prep.get("counts", {})
    stage_logs = {s.name: _read_log(layout.stage(s.name) / "train_log.jsonl") for s in recipe.train}
    stages = []
    for s in recipe.train:
        p = layout.stage(s.name) / "summary.json"
        if p.exists():
            stages.append({"name": s.name, **json.loads(p.read_text())})
    examples = []
    k = recipe.report.include_examples
    if k:
        for m in metrics["models"]:
            p = layout.generations / f"{m}.jsonl"
            if p.exists():
                rows = [json.loads(x) for x in p.read_text().splitlines() if x.strip()][:k]
                examples += [{"model": m, **r} for r in rows]
    models = list(metrics["models"])
    cls_rows = classification_rows(metrics)
    mb = metrics["models"][metrics["baseline"]]
    sampled = {q.name: q.n for q in recipe.evaluate.mcq}
    mcq_notes = [
        f"{name}: {r.get('num_fewshot', 0)}-shot log-likelihood scoring of the choices, "
        f"{'with the chat template' if r.get('chat_template') else 'plain prompt'}, "
        + (f"a seeded random sample of {r['n']} questions"
           if r.get("sampled", sampled.get(name) is not None)
           else f"all {r['n']} questions of the file")
        for name, r in mb.get("mcq", {}).items()
    ]  # fmt: skip
    undefined = {
        m: d.get("rouge", {}).get("scorers", {}).get("concept_f1_undefined", 0)
        for m, d in metrics["models"].items()
    }
    concept_note = [
        "Concept F1 is undefined (no vocabulary concept in either text) and left out of its mean "
        "for " + ", ".join(f"{n} note(s) of {m}" for m, n in undefined.items() if n) + "."
    ] * any(undefined.values())
    dropped = mb.get("rouge", {}).get("dropped_reference_too_long", 0)
    skipped = [
        f"Note scores and the rubric leave out {dropped} sampled record(s) whose reference is "
        "longer than data.max_seq_len (the longest notes): the averages cover the rest."
    ] * bool(dropped) + [
        f"{what} not measured: {mb[key]['skipped']}"
        for key, what in (("perplexity", "Document perplexity"), ("held_out", "Held-out loss"),
                          ("rouge", "Note scores"), ("rubric", "HEAL's rubric"))
        if isinstance(mb.get(key), dict) and mb[key].get("skipped")
    ]  # fmt: skip
    env = Environment(autoescape=select_autoescape(default=True))
    page = env.from_string(TEMPLATE).render(
        name=recipe.name,
        created=time.strftime("%Y-%m-%d %H:%M"),
        model=recipe.model.name,
        device=stages[0]["device"] if stages else "—",
        versions=library_versions(),
        baseline=metrics["baseline"],
        models=models,
        others=[m for m in models if m != metrics["baseline"]],
        rows=comparison_rows(metrics),
        fmt=_fmt,
        cls=_cls,
        bars=bars_plot(metrics),
        len_png=length_plot(layout, models),
        cls_rows=cls_rows,
        scorers={
            k: v
            for k, v in mb.get("rouge", {}).get("scorers", {}).items()
            if k != "concept_f1_undefined"
        },
        cm_png=confusion_plot(cls_rows),
        loss_png=loss_plot(stage_logs),
        stages=stages,
        warnings=prep.get("warnings", []),
        ingest=counts.get("ingest", {}),
        phi=counts.get("phi"),
        dedup=counts.get("dedup"),
        tasks=counts.get("tasks", {}),
        split=counts.get("split", {}),
        tok=counts.get("tokenize", {}),
        examples=examples,
        mcq_notes=mcq_notes,
        skipped=skipped + concept_note,
    )
    atomic_write_text(layout.report, page)
    return layout.report
