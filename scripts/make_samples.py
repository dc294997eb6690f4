"""Build the sample data shipped inside the package from ../shared/data (maintainers only).

Deterministic: rerunning produces the same files. Every file's source and license is written to
src/clinitune/samples/ATTRIBUTION.md. Sizes are chosen for a wheel and a 10-minute CPU quickstart.

    python scripts/make_samples.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "clinitune" / "samples"
SEED = 20261123
MEDICAL_MMLU = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)

# General-knowledge subjects for the retention check (STEM, humanities, social sciences, other).
GENERAL_MMLU = (
    "elementary_mathematics",
    "high_school_world_history",
    "philosophy",
    "high_school_geography",
    "us_foreign_policy",
    "computer_security",
)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write_csv(path: Path, rows: list[dict[str, str]], fields: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, quoting=csv.QUOTE_MINIMAL)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in fields})


def aci(shared: Path, rng: random.Random) -> None:
    src = shared / "aci_bench" / "challenge_data"
    rows, meta = [], {}
    for split, n in (("train", 45), ("valid", 15)):
        data = _read_csv(src / f"{split}.csv")
        picked = sorted(rng.sample(range(len(data)), n))
        rows += [data[i] for i in picked]
        for m in _read_csv(src / f"{split}_metadata.csv"):
            meta[m["encounter_id"]] = m
    for r in rows:
        m = meta[r["encounter_id"]]
        r["patient_firstname"] = m["patient_firstname"]
        r["patient_familyname"] = m["patient_familyname"]
    _write_csv(
        OUT / "aci_bench" / "encounters.csv",
        rows,
        ["dataset", "encounter_id", "patient_firstname", "patient_familyname", "dialogue", "note"],
    )


def mts(shared: Path, rng: random.Random) -> None:
    src = shared / "mts_dialog" / "Main-Dataset"
    rows = []
    for name, n, prefix in (
        ("MTS-Dialog-TrainingSet.csv", 400, "train"),
        ("MTS-Dialog-ValidationSet.csv", 100, "valid"),
    ):
        data = _read_csv(src / name)
        for i in sorted(rng.sample(range(len(data)), n)):
            # IDs restart at 0 in each file: namespace them so encounters stay distinct.
            rows.append({**data[i], "ID": f"{prefix}-{data[i]['ID']}"})
    _write_csv(
        OUT / "mts_dialog" / "mts_dialog.csv",
        rows,
        ["ID", "section_header", "section_text", "dialogue"],
    )


def mmlu(shared: Path, rng: random.Random) -> None:
    # Medical subjects, test split: a seeded random sample (the files are not shuffled by answer
    # in MMLU, but other benchmark files are; sampling is the habit).
    rows: list[list[str]] = []
    for subj in MEDICAL_MMLU:
        with open(shared / "mmlu" / "test" / f"{subj}_test.csv", newline="", encoding="utf-8") as f:
            data = list(csv.reader(f))
        rows += [[*data[i], subj] for i in sorted(rng.sample(range(len(data)), 20))]
    path = OUT / "mcq" / "mmlu_medical_test.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    # Retention: general subjects, test split, sampled the same way (drawn after the medical
    # sample, so that one is unchanged); and each group's dev questions for few-shot prompts.
    general: list[list[str]] = []
    for subj in GENERAL_MMLU:
        with open(shared / "mmlu" / "test" / f"{subj}_test.csv", newline="", encoding="utf-8") as f:
            data = list(csv.reader(f))
        general += [[*data[i], subj] for i in sorted(rng.sample(range(len(data)), 20))]
    with open(OUT / "mcq" / "mmlu_general_test.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(general)
    for group, subjects in (("medical", MEDICAL_MMLU), ("general", GENERAL_MMLU)):
        dev: list[list[str]] = []
        for subj in subjects:
            src = shared / "mmlu" / "dev" / f"{subj}_dev.csv"
            with open(src, newline="", encoding="utf-8") as f:
                dev += [[*row, subj] for row in csv.reader(f)]
        with open(OUT / "mcq" / f"mmlu_{group}_dev.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(dev)
    # General-domain text stand-in for CPT mixing at toy scale: MMLU *dev* questions of
    # non-medical subjects written out as text (the retention evaluation uses *test*).
    docs = []
    for p in sorted((shared / "mmlu" / "dev").glob("*_dev.csv")):
        subj = p.name.removesuffix("_dev.csv")
        if subj in MEDICAL_MMLU:
            continue
        with open(p, newline="", encoding="utf-8") as f:
            for j, row in enumerate(csv.reader(f)):
                q, *choices, ans = row
                answer = choices["ABCD".index(ans.strip())]
                docs.append({"id": f"{subj}-{j}", "text": f"{q}\nAnswer: {answer}"})
    with open(OUT / "general" / "general_text.jsonl", "w", encoding="utf-8") as f:
        (OUT / "general").mkdir(exist_ok=True)
        for d in docs:
            f.write(json.dumps(d) + "\n")


def pubmedqa(shared: Path, rng: random.Random) -> None:
    src = next((shared / "pubmedqa").glob("*.json"))
    data = json.loads(src.read_text(encoding="utf-8"))
    pmids = sorted(data)
    rng.shuffle(pmids)
    evald = {k: data[k] for k in sorted(pmids[:60])}
    (OUT / "mcq").mkdir(parents=True, exist_ok=True)
    (OUT / "mcq" / "pubmedqa_sample.json").write_text(json.dumps(evald, indent=1), encoding="utf-8")
    # Disjoint PMIDs as "medical literature" text for the CPT mix at toy scale.
    with open(OUT / "literature" / "pubmed_abstracts.jsonl", "w", encoding="utf-8") as f:
        for k in sorted(pmids[60:160]):
            d = data[k]
            text = " ".join(d["CONTEXTS"]) + (
                "\n" + d["LONG_ANSWER"] if d.get("LONG_ANSWER") else ""
            )
            f.write(json.dumps({"pmid": k, "text": text}) + "\n")


def medec(shared: Path, rng: random.Random) -> None:
    """30 texts with an error and 30 without (MEDEC-MS validation): a balanced yes/no set for
    the classification evaluation and its label-collapse check."""
    rows = _read_csv(
        shared / "medec_ms" / "MEDEC-MS-ValidationSet-with-GroundTruth-and-ErrorType.csv"
    )
    rows = [r for r in rows if r["Text ID"].strip()]
    pos = rng.sample([r for r in rows if r["Error Flag"] == "1"], 30)
    neg = rng.sample([r for r in rows if r["Error Flag"] == "0"], 30)
    fields = ["Text ID", "Text", "Error Flag", "Error Type"]
    picked = sorted(pos + neg, key=lambda r: int(r["Text ID"].rsplit("-", 1)[1]))
    _write_csv(OUT / "medec" / "medec_ms_sample.csv", [{k: r[k] for k in fields} for r in picked],
               fields)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    (OUT / "literature").mkdir(parents=True, exist_ok=True)
    (OUT / "general").mkdir(parents=True, exist_ok=True)
    for fn in (aci, mts, mmlu, pubmedqa, medec):
        fn(args.shared, random.Random(f"{SEED}-{fn.__name__}"))
    print(f"wrote samples under {OUT}")


if __name__ == "__main__":
    main()
