"""Validate the rubric (missed / incorrect / irrelevant information; concept level, or by
claims with a judge) against human fact-level scores, and check that it moves the right way
under perturbations.

1. **Correlation study.** MTS-Dialog's ``Correlation-Study``: 400 system summaries of validation
   dialogues (``MTS-Dialog-Automatic-Summaries-ValidationSet.csv``: ID, Dialogue, Reference
   Summary, Automatic Summary) and, row by row, human fact-level scores
   (``MTS-Dialog-Manual-Scores4CorrelationStudy.csv``: FactualPrecision, FactualRecall,
   FactualF1, HallucinationRate, OmissionRate; no ID column, so rows align by order -- both
   files have 400 rows, checked). Spearman correlation (scipy) of clinitune's rates with the
   human ones: missed_rate ~ OmissionRate and 1 - FactualRecall; incorrect_rate ~
   HallucinationRate and 1 - FactualPrecision. ROUGE-1 recall / precision (rouge-score) on the
   same rows are the baseline an automatic metric should beat.
2. **Perturbations** of the reference summaries (each used as a perfect output, then edited):
   drop the sentence that names a medication -> missed should rise; flip left/right -> incorrect
   should rise; multiply a dose by ten -> incorrect should rise. Reported: the share of edited
   notes where the metric rose, and its mean change.

Usage: ``.venv/bin/python benchmarks/rubric_validation.py [--out rubric_validation.json]``;
with a judge: ``--judge-url URL --judge-model M`` (OpenAI-compatible endpoint) or
``--judge-local MODEL [--claims sentences] [--verdicts scores]``, with ``--limit N`` rows and
``--perturbation-limit N`` edited notes per perturbation to bound the time.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import time
from pathlib import Path

from scipy.stats import spearmanr

from clinitune.evaluate.judge import describe
from clinitune.evaluate.rubric import rubric

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT.parent / "shared" / "data" / "mts_dialog" / "Correlation-Study"
MEDS = re.compile(
    r"\b(?:[A-Z]?[a-z]+(?:pril|sartan|olol|statin|pine|azole|cillin|mycin|formin|prazole|"
    r"profen|oxetine|triptyline|zepam|codone|dronate|tidine|lukast)|aspirin|insulin|tylenol|"
    r"ibuprofen|advil|motrin|aleve|prednisone|warfarin|coumadin|lasix|synthroid|zoloft|"
    r"xanax|vicodin|norco|tramadol|gabapentin|neurontin)\b",
    re.I,
)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def correlation_study(study: Path, judge=None, limit: int | None = None) -> dict:
    """``judge``: a :class:`clinitune.evaluate.judge.Judge` to score by claims instead of
    concepts; ``limit``: a seeded random sample of that many rows (a judge is slow)."""
    from rouge_score import rouge_scorer

    from clinitune.evaluate.judge import judged_rubric

    sums = read_csv(study / "MTS-Dialog-Automatic-Summaries-ValidationSet.csv")
    human = read_csv(study / "MTS-Dialog-Manual-Scores4CorrelationStudy.csv")
    if len(sums) != len(human):
        raise SystemExit(f"row counts differ: {len(sums)} summaries vs {len(human)} scores")
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    if limit and limit < len(sums):
        # a seeded random sample: the file is ordered by system, so its first rows would be
        # one system's summaries only
        keep = sorted(random.Random(0).sample(range(len(sums)), limit))
        sums, human = [sums[i] for i in keep], [human[i] for i in keep]
    ours, rouge, gold = [], [], []
    for i, (s, h) in enumerate(zip(sums, human, strict=True)):
        args3 = (s["Dialogue"], s["Reference Summary"], s["Automatic Summary"])
        ours.append(judged_rubric(judge, *args3, f"row {i}") if judge else rubric(*args3))
        r = scorer.score(s["Reference Summary"], s["Automatic Summary"])["rouge1"]
        rouge.append({"recall": r.recall, "precision": r.precision})
        gold.append({k: float(v) for k, v in h.items() if v.strip()})

    def rho(xs: list[float | None], ys: list[float | None]) -> dict:
        # a rate with nothing to divide by (no concepts / claims in the note) is undefined:
        # those rows are left out, and counted
        pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
        res = spearmanr([x for x, _ in pairs], [y for _, y in pairs])
        return {
            "rho": round(float(res.statistic), 4),
            "p": float(res.pvalue),
            "n": len(pairs),
            "undefined": len(xs) - len(pairs),
        }

    def col(rows: list[dict], key: str, f=lambda v: v, like: str | None = None) -> list:
        """``like``: undefined where our ``like`` rate is (baselines on the same rows)."""
        return [
            None if r.get(key) is None or (like and o.get(like) is None) else f(r[key])
            for r, o in zip(rows, ours, strict=True)
        ]

    return {
        "rows": len(sums),
        "missed_rate~OmissionRate": rho(col(ours, "missed_rate"), col(gold, "OmissionRate")),
        "missed_rate~1-FactualRecall": rho(
            col(ours, "missed_rate"), col(gold, "FactualRecall", lambda v: 1 - v)
        ),
        "incorrect_rate~HallucinationRate": rho(
            col(ours, "incorrect_rate"), col(gold, "HallucinationRate")
        ),
        "incorrect_rate~1-FactualPrecision": rho(
            col(ours, "incorrect_rate"), col(gold, "FactualPrecision", lambda v: 1 - v)
        ),
        "baseline: 1-ROUGE1_recall~OmissionRate": rho(
            col(rouge, "recall", lambda v: 1 - v, "missed_rate"), col(gold, "OmissionRate")
        ),
        "baseline: 1-ROUGE1_recall~1-FactualRecall": rho(
            col(rouge, "recall", lambda v: 1 - v, "missed_rate"),
            col(gold, "FactualRecall", lambda v: 1 - v),
        ),
        "baseline: 1-ROUGE1_precision~HallucinationRate": rho(
            col(rouge, "precision", lambda v: 1 - v, "incorrect_rate"),
            col(gold, "HallucinationRate"),
        ),
        "baseline: 1-ROUGE1_precision~1-FactualPrecision": rho(
            col(rouge, "precision", lambda v: 1 - v, "incorrect_rate"),
            col(gold, "FactualPrecision", lambda v: 1 - v),
        ),
        "human_hallucination_nonzero": sum(g["HallucinationRate"] > 0 for g in gold),
    }


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def perturbations(study: Path, judge=None, limit: int | None = None) -> dict:
    """``limit``: at most this many edited notes per perturbation (a judge is slow)."""
    from clinitune.evaluate.judge import judged_rubric

    rows = read_csv(study / "MTS-Dialog-Automatic-Summaries-ValidationSet.csv")
    seen, refs = set(), []
    for r in rows:  # each reference appears once per system: use each once
        if r["Reference Summary"] not in seen:
            seen.add(r["Reference Summary"])
            refs.append((r["Dialogue"], r["Reference Summary"]))
    out = {}

    def edit_drop_med(ref: str) -> str | None:
        sents = _sentences(ref)
        hit = [i for i, s in enumerate(sents) if MEDS.search(s)]
        if not hit or len(sents) < 2:
            return None
        return " ".join(s for i, s in enumerate(sents) if i != hit[0])

    def edit_flip_side(ref: str) -> str | None:
        if not re.search(r"\b(left|right)\b", ref, re.I):
            return None
        return re.sub(r"\b(left|right)\b",
                      lambda m: {"left": "right", "right": "left"}[m.group(1).lower()], ref,
                      flags=re.I)  # fmt: skip

    def edit_dose(ref: str) -> str | None:
        m = re.search(r"\b(\d+(?:\.\d+)?)\s*(mg|mcg|milligrams?|units?|ml)\b", ref, re.I)
        if not m:
            return None
        return (
            ref[: m.start(1)]
            + str(float(m.group(1)) * 10).rstrip("0").rstrip(".")
            + ref[m.end(1) :]
        )

    for name, edit, key in [
        ("drop a medication sentence", edit_drop_med, "missed_rate"),
        ("flip left/right", edit_flip_side, "incorrect_rate"),
        ("dose x10", edit_dose, "incorrect_rate"),
    ]:
        deltas = []
        for dialogue, ref in refs:
            new = edit(ref)
            if new is None or new == ref:
                continue
            if limit and len(deltas) >= limit:
                break
            if judge is not None:
                before = judged_rubric(judge, dialogue, ref, ref, f"{name}: before")[key]
                after = judged_rubric(judge, dialogue, ref, new, f"{name}: after")[key]
            else:
                before = rubric(dialogue, ref, ref)[key]
                after = rubric(dialogue, ref, new)[key]
            if before is None or after is None:  # undefined rate (nothing to divide by)
                continue
            deltas.append(after - before)
        out[name] = {
            "metric": key,
            "notes": len(deltas),
            "rose": sum(d > 0 for d in deltas),
            "share_rose": round(sum(d > 0 for d in deltas) / len(deltas), 4) if deltas else None,
            "mean_change": round(sum(deltas) / len(deltas), 4) if deltas else None,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", default=str(STUDY))
    ap.add_argument("--out", default=None)
    ap.add_argument("--judge-url", help="OpenAI-compatible endpoint: score by claims")
    ap.add_argument("--judge-model", default="default")
    ap.add_argument(
        "--judge-local",
        metavar="MODEL",
        help="a local model (path, hub id in the cache, or smollm2-135m-instruct) as judge",
    )
    ap.add_argument("--claims", choices=["model", "sentences"], default="model")
    ap.add_argument("--verdicts", choices=["generate", "scores"], default="generate")
    ap.add_argument("--calibrate", action="store_true", help="contextual calibration (scores)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=int, default=None, help="a random sample of N rows (seed 0)")
    ap.add_argument(
        "--perturbation-limit", type=int, default=None, help="edited notes per perturbation"
    )
    args = ap.parse_args()
    study = Path(args.study)
    judge = None
    if args.judge_url or args.judge_local:
        from clinitune.evaluate.judge import Judge
        from clinitune.recipe import JudgeSpec

        kind = "openai" if args.judge_url else "local"
        spec = JudgeSpec(
            kind=kind,
            model=args.judge_local or args.judge_model,
            url=args.judge_url,
            claims=args.claims,
            verdicts=args.verdicts,
            calibrate=args.calibrate,
        )
        judge = Judge(spec, device=args.device)
    t0 = time.perf_counter()
    corr = correlation_study(study, judge, args.limit)
    t1 = time.perf_counter()
    pert = perturbations(study, judge, args.perturbation_limit)
    t2 = time.perf_counter()
    res = {
        "method": describe(judge.spec) if judge else "concepts",
        "correlation": corr,
        "perturbations": pert,
        "seconds": {"correlation": round(t1 - t0, 1), "perturbations": round(t2 - t1, 1)},
    }
    print(f"method: {res['method']}; {res['seconds']}")
    c = res["correlation"]
    print(f"MTS-Dialog correlation study, {c['rows']} system summaries (Spearman rho, p):")
    for k, v in c.items():
        if isinstance(v, dict):
            print(f"  {k:52s} {v['rho']:+.3f}  (p={v['p']:.2g}, n={v['n']})")
    print(f"  rows with human hallucination > 0: {c['human_hallucination_nonzero']}")
    print("perturbations of the reference summaries (used as perfect outputs):")
    for k, v in res["perturbations"].items():
        print(f"  {k:28s} {v['metric']:15s} rose in {v['rose']}/{v['notes']} notes, "
              f"mean change {v['mean_change']}")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
