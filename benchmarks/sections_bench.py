"""Section splitter benchmark: agreement with ACI-Bench's divisions, and throughput.

For every ACI-Bench split under ``../shared/data/aci_bench/challenge_data_json`` (any
``<split>_<division>.json`` set with all four divisions), this reports the token-level agreement
of ``clinitune.data.sections`` with ACI-Bench's own section divisions (subjective,
objective_exam, objective_results, assessment_and_plan), the number of notes, and micro-averages
over all splits; then the splitter's throughput in notes/s on those notes.

Agreement is the definition of ``tests/test_sections.py::_aci_agreement`` (copied below as
``token_f1`` / ``clinitune_divisions`` / ``agreement``, and cross-checked against the test's own
function when that module can be imported): per note and division, token F1 (whitespace tokens,
multiset overlap) between our division text -- the raw note span of each assigned section
*including its header line* -- and ACI's reference ``tgt`` (an ``#####EMPTY#####`` placeholder
counts as empty; both empty scores 1.0). A split's division score is the mean over its notes.
Two pooled numbers are printed:

* ``micro (notes)``: the mean per-note F1 over all notes of all splits (note-weighted, so a
  larger split counts more than in a mean of split means); ``all`` is the mean over every
  (note, division) pair.
* ``micro (tokens)``: one F1 from token overlaps and token counts summed over all notes (and,
  for ``all``, all divisions), so long divisions weigh more.

Notes come from ``challenge_data/<split>.csv`` (as in the test); a split without that CSV falls
back to ``<split>_full.json``, whose ``tgt`` is the full note (identical to the CSV's ``note`` for
train and valid).

Throughput: ``split_sections`` + ``assign_divisions`` over all notes; after one warm-up pass,
``--repeat`` samples of whole passes (each sample at least ~0.2 s), reported as the median
notes/s over samples (min/max printed too).

Peer: medspaCy's ``Sectionizer`` (default English rules) on ``spacy.blank("en")``, timed the same
way in the same process (``nlp.pipe`` over the same notes: its time includes spaCy tokenization,
which its matcher needs), with agreement from mapping its categories to ACI's divisions
(``MEDSPACY_DIVISIONS`` below; categories with no fair division -- hospital_course, addendum,
comments, signature, other, and the untitled text before the first header -- are dropped, as
clinitune drops its preamble).

medspaCy is NOT installed in the project's .venv, so there the peer is skipped with a printed
message. Checked with ``pip install --dry-run medspacy`` (Python 3.11, Nov 2026): medspacy 1.3.1
pins ``spacy<3.8``, and the resolver then picks spaCy 3.7.5 / thinc 8.2.5 and downgrades numpy
2.4.6 -> 1.26.4. With numpy pinned (``pip install medspacy numpy==2.4.6``) pip resolves thinc
8.2.4 instead, but in a scratch venv ``import spacy`` then fails with "numpy.dtype size changed,
may indicate binary incompatibility" (thinc 8.2.x is built against numpy 1.x). So medspaCy cannot
share the project's environment; the peer runs only under an interpreter that has it (e.g. a
separate venv with ``medspacy`` and ``numpy<2``: ``clinitune.data.sections`` is stdlib-only, and
this script falls back to ``src/`` on ``sys.path`` when clinitune is not installed).

Known limits of the peer's default rules on ACI notes: most of its literals end in a colon
("HISTORY OF PRESENT ILLNESS:", "ASSESSMENT:") while ACI's headers are own-line without one, and it
has no review-of-systems, ED course or MDM rules.

Usage::

    .venv/bin/python benchmarks/sections_bench.py --out /tmp/sections_bench.json
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ACI_DIR = REPO.parent / "shared" / "data" / "aci_bench"

try:
    from clinitune.data.sections import (
        ACI_DIVISIONS,
        assign_divisions,
        division_texts,
        split_sections,
    )
except ImportError:  # run from a checkout under an interpreter without clinitune installed
    sys.path.insert(0, str(REPO / "src"))
    from clinitune.data.sections import (
        ACI_DIVISIONS,
        assign_divisions,
        division_texts,
        split_sections,
    )

DIVISIONS: tuple[str, ...] = tuple(ACI_DIVISIONS)
EMPTY_MARK = "#####EMPTY#####"

# medspaCy default (English) section category -> ACI division. Its categories are coarser than
# ours: "labs_and_studies" also holds its "Vital Signs" rule, and "observation_and_plan" holds
# assessment, plan and impression; "hospital_course" (which also holds "PROCEDURE NOTE") has no
# ACI division, like clinitune's hospital_course / ed_course.
MEDSPACY_DIVISIONS: dict[str, str] = {
    "chief_complaint": "subjective",
    "history_of_present_illness": "subjective",
    "past_medical_history": "subjective",
    "problem_list": "subjective",
    "medications": "subjective",
    "allergies": "subjective",
    "allergy": "subjective",
    "social_history": "subjective",
    "family_history": "subjective",
    "reason_for_examination": "subjective",
    "physical_exam": "objective_exam",
    "neurological": "objective_exam",
    "labs_and_studies": "objective_results",
    "imaging": "objective_results",
    "observation_and_plan": "assessment_and_plan",
    "diagnoses": "assessment_and_plan",
    "patient_instructions": "assessment_and_plan",
    "patient_education": "assessment_and_plan",
}


# --- agreement (same definition as tests/test_sections.py::_aci_agreement) --------------------


def token_counts(pred: str, ref: str) -> tuple[int, int, int]:
    """(overlap, pred tokens, ref tokens) for whitespace tokens, multiset overlap."""
    p, r = Counter(pred.split()), Counter(ref.split())
    return sum((p & r).values()), sum(p.values()), sum(r.values())


def token_f1(pred: str, ref: str) -> float:
    """Copy of ``tests/test_sections.py::_token_f1``."""
    overlap, n_pred, n_ref = token_counts(pred, ref)
    if not n_pred and not n_ref:
        return 1.0
    if not overlap:
        return 0.0
    prec, rec = overlap / n_pred, overlap / n_ref
    return 2 * prec * rec / (prec + rec)


def clinitune_divisions(note: str) -> list[str]:
    """Division texts in ``DIVISIONS`` order: each assigned section's raw span incl. header."""
    divs = division_texts(note)  # the same split the evaluation's per-division ROUGE uses
    return [divs[d] for d in DIVISIONS]


def load_split(aci_dir: Path, split: str) -> tuple[dict[str, str], dict[str, dict[str, str]], str]:
    """(notes by encounter id, reference text by division and encounter id, notes source)."""
    csv_path = aci_dir / "challenge_data" / f"{split}.csv"
    json_dir = aci_dir / "challenge_data_json"
    if csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8") as fh:
            notes = {row["encounter_id"]: row["note"] for row in csv.DictReader(fh)}
        source = str(csv_path.relative_to(aci_dir))
    else:
        full = json.loads((json_dir / f"{split}_full.json").read_text(encoding="utf-8"))["data"]
        notes = {item["file"].split("-")[0]: item["tgt"] for item in full}
        source = f"challenge_data_json/{split}_full.json"
    refs: dict[str, dict[str, str]] = {}
    for div in DIVISIONS:
        items = json.loads((json_dir / f"{split}_{div}.json").read_text(encoding="utf-8"))["data"]
        if len(items) != len(notes):
            raise SystemExit(f"{split}_{div}.json has {len(items)} items for {len(notes)} notes")
        refs[div] = {
            item["file"].split("-")[0]: ("" if EMPTY_MARK in item["tgt"] else item["tgt"])
            for item in items
        }
        if set(refs[div]) != set(notes):
            raise SystemExit(f"{split}_{div}.json encounter ids differ from the notes'")
    return notes, refs, source


def agreement(
    notes: Mapping[str, str],
    refs: Mapping[str, Mapping[str, str]],
    predict: Callable[[str], list[str]],
) -> dict[str, list[tuple[float, int, int, int]]]:
    """Per division: one (F1, overlap, pred tokens, ref tokens) per note, in note order."""
    preds = {eid: predict(note) for eid, note in notes.items()}
    out: dict[str, list[tuple[float, int, int, int]]] = {}
    for i, div in enumerate(DIVISIONS):
        rows = []
        for eid in notes:
            pred, ref = preds[eid][i], refs[div][eid]
            rows.append((token_f1(pred, ref), *token_counts(pred, ref)))
        out[div] = rows
    return out


def pooled(rows: Sequence[tuple[float, int, int, int]]) -> dict[str, float]:
    """Note-weighted mean F1 and token-pooled F1 of per-note rows."""
    overlap = sum(r[1] for r in rows)
    n_pred = sum(r[2] for r in rows)
    n_ref = sum(r[3] for r in rows)
    if not n_pred and not n_ref:
        tok = 1.0
    elif not overlap:
        tok = 0.0
    else:
        tok = 2 * overlap / (n_pred + n_ref)
    return {"micro_notes": sum(r[0] for r in rows) / len(rows), "micro_tokens": tok}


def summarize(per_split: Mapping[str, Mapping[str, list[tuple[float, int, int, int]]]]) -> dict:
    """Per-split division means plus micro-averages over all splits."""
    result: dict = {"splits": {}, "micro": {}}
    for split, by_div in per_split.items():
        result["splits"][split] = {div: pooled(rows)["micro_notes"] for div, rows in by_div.items()}
        result["splits"][split]["all"] = pooled([r for rows in by_div.values() for r in rows])[
            "micro_notes"
        ]
    for div in DIVISIONS:
        result["micro"][div] = pooled([r for s in per_split.values() for r in s[div]])
    result["micro"]["all"] = pooled(
        [r for s in per_split.values() for rows in s.values() for r in rows]
    )
    return result


def cross_check(aci_dir: Path, splits: Sequence[str], summary: Mapping) -> str:
    """Compare with the test's own ``_aci_agreement`` (same data dir only)."""
    test_path = REPO / "tests" / "test_sections.py"
    try:
        spec = importlib.util.spec_from_file_location("_test_sections_for_bench", test_path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except Exception as exc:  # pytest missing, test moved, ...
        return f"skipped (cannot import {test_path.name}: {type(exc).__name__}: {exc})"
    if Path(mod.ACI_DIR).resolve() != aci_dir.resolve():
        return f"skipped (the test reads {mod.ACI_DIR}, this run {aci_dir})"
    checked = []
    for split in splits:
        if not (aci_dir / "challenge_data" / f"{split}.csv").is_file():
            continue
        theirs = mod._aci_agreement(split)
        ours = summary["splits"][split]
        bad = {d: (ours[d], theirs[d]) for d in DIVISIONS if abs(ours[d] - theirs[d]) > 1e-12}
        if bad:
            raise SystemExit(f"agreement differs from tests/test_sections.py on {split}: {bad}")
        checked.append(split)
    return f"OK, identical on {', '.join(checked)}" if checked else "skipped (no CSV splits)"


# --- throughput ---------------------------------------------------------------------------------


def time_passes(
    run_pass: Callable[[], object], n_notes: int, repeat: int, min_sample_s: float = 0.2
) -> dict[str, float]:
    """Median notes/s over ``repeat`` samples, after a warm-up pass.

    One pass over all notes can take only milliseconds, so each sample runs as many whole
    passes as fill ``min_sample_s`` (calibrated on the warm-up).
    """
    t0 = time.perf_counter()
    run_pass()
    inner = max(1, math.ceil(min_sample_s / max(time.perf_counter() - t0, 1e-9)))
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            run_pass()
        rates.append(inner * n_notes / (time.perf_counter() - t0))
    return {
        "samples": repeat,
        "passes_per_sample": inner,
        "notes_per_pass": n_notes,
        "notes_per_s": statistics.median(rates),
        "notes_per_s_min": min(rates),
        "notes_per_s_max": max(rates),
    }


def clinitune_pass(notes: Sequence[str]) -> Callable[[], object]:
    def run() -> object:
        last = None
        for note in notes:
            last = assign_divisions(split_sections(note))
        return last

    return run


# --- medspaCy peer ------------------------------------------------------------------------------


def load_medspacy() -> tuple[object | None, str]:
    """(nlp or None, versions or the reason it is unavailable)."""
    try:
        import medspacy  # registers the "medspacy_sectionizer" factory
        import spacy
    except Exception as exc:
        return None, (
            f"medspacy is not importable here ({type(exc).__name__}: {exc}). It is not installed "
            "in the project's .venv on purpose: its spaCy<3.8 pin would downgrade numpy "
            "2.4.6 -> 1.26.4, and the numpy-2 resolution (thinc 8.2.4) fails at import with a "
            "binary incompatibility. Run this script under a separate environment with "
            "medspacy and numpy<2 for the peer numbers (see the module docstring)."
        )
    import numpy

    nlp = spacy.blank("en")
    nlp.add_pipe("medspacy_sectionizer")
    versions = (
        f"medspacy {medspacy.__version__}, spacy {spacy.__version__}, numpy {numpy.__version__}"
    )
    return nlp, versions


def medspacy_divisions(nlp) -> Callable[[str], list[str]]:
    def predict(note: str) -> list[str]:
        doc = nlp(note)
        parts: dict[str, list[str]] = {d: [] for d in DIVISIONS}
        for sec in doc._.sections:
            div = MEDSPACY_DIVISIONS.get(sec.category) if sec.category else None
            if div is not None:
                parts[div].append(doc[sec.title_start : sec.body_end].text)
        return ["\n".join(parts[d]) for d in DIVISIONS]

    return predict


def medspacy_pass(nlp, notes: Sequence[str]) -> Callable[[], object]:
    def run() -> object:
        last = None
        for doc in nlp.pipe(notes):
            last = doc._.sections
        return last

    return run


def medspacy_categories(nlp, notes: Sequence[str]) -> dict[str, int]:
    """How often each category was found (None = text before the first header)."""
    counts: Counter[str] = Counter()
    for doc in nlp.pipe(notes):
        counts.update(str(s.category) for s in doc._.sections)
    return dict(counts.most_common())


# --- main ---------------------------------------------------------------------------------------


def discover_splits(aci_dir: Path) -> list[str]:
    json_dir = aci_dir / "challenge_data_json"
    splits = []
    for path in sorted(json_dir.glob("*_subjective.json")):
        split = path.name[: -len("_subjective.json")]
        missing = [d for d in DIVISIONS if not (json_dir / f"{split}_{d}.json").is_file()]
        has_notes = (aci_dir / "challenge_data" / f"{split}.csv").is_file() or (
            json_dir / f"{split}_full.json"
        ).is_file()
        if missing or not has_notes:
            print(f"skipping split {split}: missing {missing or 'notes (csv and _full.json)'}")
            continue
        splits.append(split)
    return splits


def print_agreement(title: str, summary: Mapping, n_notes: Mapping[str, int]) -> None:
    short = {
        "subjective": "subj",
        "objective_exam": "obj_exam",
        "objective_results": "obj_results",
        "assessment_and_plan": "a_and_p",
        "all": "all",
    }
    cols = [*DIVISIONS, "all"]
    print(f"\n{title}")
    header = f"{'split':<20}{'notes':>6}" + "".join(f"{short[c]:>12}" for c in cols)
    print(header)
    print("-" * len(header))
    for split, scores in summary["splits"].items():
        print(f"{split:<20}{n_notes[split]:>6}" + "".join(f"{scores[c]:>12.4f}" for c in cols))
    total = sum(n_notes.values())
    for key, label in (("micro_notes", "micro (notes)"), ("micro_tokens", "micro (tokens)")):
        row = "".join(f"{summary['micro'][c][key]:>12.4f}" for c in cols)
        print(f"{label:<20}{total:>6}" + row)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--aci-dir", type=Path, default=DEFAULT_ACI_DIR, help="ACI-Bench folder")
    ap.add_argument("--repeat", type=int, default=15, help="timed samples (each >= ~0.2 s)")
    ap.add_argument("--no-peer", action="store_true", help="skip medspaCy even if importable")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)

    aci_dir: Path = args.aci_dir
    if not (aci_dir / "challenge_data_json").is_dir():
        print(f"ACI-Bench data not found at {aci_dir}", file=sys.stderr)
        return 2
    splits = discover_splits(aci_dir)
    if not splits:
        print(f"no complete ACI-Bench split under {aci_dir / 'challenge_data_json'}")
        return 2

    data = {s: load_split(aci_dir, s) for s in splits}
    n_notes = {s: len(data[s][0]) for s in splits}
    all_notes = [note for s in splits for note in data[s][0].values()]
    n_chars = sum(len(n) for n in all_notes)

    ours = summarize({s: agreement(data[s][0], data[s][1], clinitune_divisions) for s in splits})
    check = cross_check(aci_dir, splits, ours)
    print(f"ACI-Bench at {aci_dir}: splits {', '.join(splits)} ({len(all_notes)} notes)")
    for s in splits:
        print(f"  {s}: notes from {data[s][2]}")
    print_agreement("clinitune: token F1 vs ACI-Bench divisions (mean over notes)", ours, n_notes)
    print(f"cross-check vs tests/test_sections.py::_aci_agreement: {check}")

    thr = time_passes(clinitune_pass(all_notes), len(all_notes), args.repeat)
    print(
        f"\nthroughput ({len(all_notes)} notes, {n_chars / len(all_notes):,.0f} chars/note avg, "
        f"median of {args.repeat} samples of >= 0.2 s after a warm-up pass)"
    )
    print(
        f"  clinitune split_sections+assign_divisions: {thr['notes_per_s']:,.0f} notes/s "
        f"(min {thr['notes_per_s_min']:,.0f}, max {thr['notes_per_s_max']:,.0f})"
    )

    peer: dict = {"name": "medspacy Sectionizer on spacy.blank('en'), default rules"}
    if args.no_peer:
        peer.update(available=False, reason="--no-peer given")
        print("  medspacy: skipped (--no-peer)")
    else:
        nlp, info = load_medspacy()
        if nlp is None:
            peer.update(available=False, reason=info)
            print(f"  medspacy: PEER SKIPPED - {info}")
        else:
            pthr = time_passes(medspacy_pass(nlp, all_notes), len(all_notes), args.repeat)
            print(
                f"  medspacy Sectionizer (nlp.pipe, blank 'en'): {pthr['notes_per_s']:,.0f} "
                f"notes/s (min {pthr['notes_per_s_min']:,.0f}, max {pthr['notes_per_s_max']:,.0f})"
            )
            ratio = thr["notes_per_s"] / pthr["notes_per_s"]
            print(f"  clinitune / medspacy: {ratio:.1f}x notes/s   [{info}]")
            predict = medspacy_divisions(nlp)
            psum = summarize({s: agreement(data[s][0], data[s][1], predict) for s in splits})
            print_agreement(
                "medspacy (categories mapped by MEDSPACY_DIVISIONS): token F1 vs ACI-Bench",
                psum,
                n_notes,
            )
            cats = medspacy_categories(nlp, all_notes)
            print(f"medspacy categories found (None = before first header): {cats}")
            peer.update(
                available=True,
                versions=info,
                throughput=pthr,
                clinitune_over_peer_notes_per_s=ratio,
                agreement=psum,
                division_map=MEDSPACY_DIVISIONS,
                categories_found=cats,
            )

    if args.out:
        result = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
            },
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "aci_dir": str(aci_dir),
            "splits": {s: {"notes": n_notes[s], "notes_source": data[s][2]} for s in splits},
            "agreement": ours,
            "agreement_cross_check": check,
            "throughput": {"clinitune": thr, "mean_chars_per_note": n_chars / len(all_notes)},
            "peer": peer,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
