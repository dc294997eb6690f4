"""The data card: what ``prepare`` did to the data, as ``data_card.json`` + ``data_card.html``.

Counts at each step (rows in, quarantined by reason, PHI findings by type, duplicates dropped,
task records and skips, split sizes, tokenization status), tokens per source, and plots: note
length and token length histograms, section coverage per source. Aggregates only: no note text.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from clinitune.run import atomic_write_text, write_json


class CardStats:
    """Per-note aggregates collected while preparing (lengths, section coverage)."""

    def __init__(self) -> None:
        self.note_chars: dict[str, list[int]] = {}
        self.sections: dict[str, Counter[str]] = {}
        self.notes: Counter[str] = Counter()

    def add_chunk(
        self, source: str, note_chars: list[int], sections: dict[str, int], notes: int
    ) -> None:
        self.note_chars.setdefault(source, []).extend(note_chars)
        self.sections.setdefault(source, Counter()).update(sections)
        self.notes[source] += notes

    def coverage(self) -> dict[str, dict[str, float]]:
        return {
            src: {s: round(c / self.notes[src], 4) for s, c in sorted(cnt.items())}
            for src, cnt in self.sections.items()
        }


def _hist_png(series: dict[str, list[int]], xlabel: str, title: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clinitune.report.html import png_base64

    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    for name, values in series.items():
        ax.hist(values, bins=30, alpha=0.55, label=f"{name} (n={len(values)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return png_base64(fig)


def _coverage_png(coverage: dict[str, dict[str, float]]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clinitune.report.html import png_base64

    sections = sorted({s for cov in coverage.values() for s in cov})
    if not sections:
        return None
    sources = list(coverage)
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(sections) + 1.2))
    height = 0.8 / max(len(sources), 1)
    for k, src in enumerate(sources):
        ys = [i + k * height for i in range(len(sections))]
        ax.barh(ys, [coverage[src].get(s, 0.0) for s in sections], height=height, label=src)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(sections))], sections, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of notes with the section")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return png_base64(fig)


TEMPLATE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>data card · {{ name }}</title><style>
body{font:14px/1.45 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f5f7}td:first-child,th:first-child{text-align:left}.muted{color:#667}
</style></head><body>
<h1>Data card · {{ name }}</h1>
<p class="muted">Aggregates of <code>clinitune prepare</code>; no note text. Machine-readable: <code>data_card.json</code>.</p>
{% for w in warnings %}<p style="color:#b42318">⚠ {{ w }}</p>{% endfor %}
<h2>1. Ingest</h2>
<table><tr><th>source</th><th>rows in</th><th>kept</th><th>quarantined</th><th>by reason</th></tr>
{% for s, c in counts.ingest.items() %}<tr><td>{{ s }}</td><td>{{ c.rows_in }}</td><td>{{ c.kept }}</td><td>{{ c.quarantined }}</td><td>{{ c.quarantine_reasons or "—" }}</td></tr>{% endfor %}</table>
<h2>2. PHI gate</h2>
{% if counts.phi.policy == "off" %}<p>off</p>{% else %}
<p>policy <code>{{ counts.phi.policy }}</code>: {{ counts.phi.notes_with_findings }} of {{ counts.phi.notes_scanned }} notes had possible identifiers.</p>
<table><tr><th>type</th><th>findings</th></tr>{% for t, n in counts.phi.findings_by_type.items() %}<tr><td>{{ t }}</td><td>{{ n }}</td></tr>{% else %}<tr><td>none</td><td>0</td></tr>{% endfor %}</table>{% endif %}
<h2>3. Dedup</h2>
<p>{{ counts.dedup.get("in") }} notes in, {{ counts.dedup.get("kept") }} kept; {{ counts.dedup.get("exact_duplicate", 0) }} exact and
{{ counts.dedup.get("near_duplicate", 0) }} near duplicates dropped, in {{ counts.dedup.get("clusters", 0) }} clusters (ids in <code>dedup_clusters.jsonl</code>).</p>
<h2>4. Sections and tasks</h2>
{% if coverage_png %}<img alt="section coverage" src="data:image/png;base64,{{ coverage_png }}">{% endif %}
<table><tr><th>task ← source</th><th>notes in</th><th>records</th><th>skipped (by reason)</th></tr>
{% for t, c in counts.tasks.items() %}<tr><td>{{ t }}</td><td>{{ c.notes_in }}</td><td>{{ c.records }}</td><td>{{ c.skipped or "—" }}</td></tr>{% endfor %}</table>
<h2>5. Split (by patient)</h2>
<table><tr><th>split</th><th>patients</th><th>records</th><th>by task</th></tr>
{% for s, c in counts.split.items() %}<tr><td>{{ s }}</td><td>{{ c.patients }}</td><td>{{ c.records }}</td><td>{{ c.by_task }}</td></tr>{% endfor %}</table>
<h2>6. Tokens</h2>
<table><tr><th>split</th><th>rows</th><th>tokens</th><th>loss tokens</th><th>status</th><th>tokens by source</th></tr>
{% for s, c in counts.tokenize.items() %}<tr><td>{{ s }}</td><td>{{ c.rows_out }}</td><td>{{ "{:,}".format(c.tokens) }}</td><td>{{ "{:,}".format(c.loss_tokens) }}</td><td>{{ c.status }}</td><td>{{ c.tokens_by_source }}</td></tr>{% endfor %}</table>
{% if mix %}<p>Mix (training tokens per task): {{ mix }}</p>{% endif %}
{% if note_png %}<img alt="note lengths" src="data:image/png;base64,{{ note_png }}">{% endif %}
{% if token_png %}<img alt="token lengths" src="data:image/png;base64,{{ token_png }}">{% endif %}
</body></html>"""


def write_data_card(
    out_dir: Path,
    name: str,
    counts: dict[str, Any],
    stats: CardStats,
    token_lengths: dict[str, list[int]],
    *,
    warnings: list[str],
    mix: dict[str, Any] | None,
) -> tuple[Path, Path]:
    coverage = stats.coverage()
    card = {
        "recipe": name,
        "counts": counts,
        "section_coverage": coverage,
        "note_chars": {
            s: {"n": len(v), "min": min(v), "median": sorted(v)[len(v) // 2], "max": max(v)}
            for s, v in stats.note_chars.items()
            if v
        },
        "mix": mix,
        "warnings": warnings,
    }
    json_path = out_dir / "data_card.json"
    write_json(json_path, card)
    env = Environment(autoescape=select_autoescape(default=True))
    page = env.from_string(TEMPLATE).render(
        name=name,
        counts=counts,
        warnings=warnings,
        mix=mix,
        coverage_png=_coverage_png(coverage),
        note_png=_hist_png(stats.note_chars, "note length (characters)", "notes kept, by source"),
        token_png=_hist_png(token_lengths, "tokens per row", "tokenized rows, by split"),
    )
    html_path = out_dir / "data_card.html"
    atomic_write_text(html_path, page)
    return json_path, html_path
