"""The PHI gate and dedup inside `prepare`: books balance, names never reach the records."""

import csv
import json

import pytest

from clinitune.data.prepare import prepare
from clinitune.errors import StageError
from clinitune.recipe import load_recipe
from clinitune.run import RunLayout

SMALL = ["data.sources.aci.limit=20", "data.sources.mts.limit=40", "data.max_seq_len=384"]


def _run(tmp_path, model_dir, extra=()):
    r = load_recipe(
        "quickstart", [f"model.name={model_dir}", f"run_dir={tmp_path / 'run'}", *SMALL, *extra]
    )
    layout = RunLayout(r.run_path)
    return r, layout, prepare(r, layout, force=True)


def _aci_names(r):
    path = r.resolve_path(r.data.sources[0].path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:20]
    return {n for row in rows for n in (row["patient_firstname"], row["patient_familyname"]) if n}


def test_redact_removes_metadata_names_from_every_record(tmp_path, tiny_model_dir):
    r, layout, res = _run(tmp_path, tiny_model_dir)
    phi = res.manifest["counts"]["phi"]
    assert phi["policy"] == "redact" and phi["findings_by_type"].get("NAME", 0) > 0
    names = _aci_names(r)
    for split in ("train", "valid", "test"):
        for line in (layout.prepared / "records" / f"{split}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec["source"] != "aci":
                continue
            blob = " ".join(str(rec.get(k, "")) for k in ("input", "completion", "text"))
            words = set(blob.replace(",", " ").replace(".", " ").split())
            assert not (names & words), "a metadata name survived redaction"
    # the manifest and the report counts carry types and numbers only
    assert not any(n in json.dumps(res.manifest) for n in names if len(n) > 3)


def test_block_policy_stops_without_printing_text(tmp_path, tiny_model_dir):
    with pytest.raises(StageError) as e:
        _run(tmp_path, tiny_model_dir, ["data.phi.policy=block"])
    msg = str(e.value)
    assert "policy: block" in msg and "NAME" in msg and "\n" not in msg


def test_report_policy_counts_but_keeps_text(tmp_path, tiny_model_dir):
    _r, layout, res = _run(tmp_path, tiny_model_dir, ["data.phi.policy=report"])
    assert res.manifest["counts"]["phi"]["findings_by_type"]["NAME"] > 0
    text = (layout.prepared / "records" / "train.jsonl").read_text()
    assert "[NAME]" not in text


def test_dedup_drops_planted_copies_and_books_balance(tmp_path, tiny_model_dir):
    src = load_recipe("quickstart").resolve_path("pkg://samples/aci_bench/encounters.csv")
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:10]
    planted = []
    for i, row in enumerate(rows[:3]):  # copy-forward: the same note under a new encounter id
        planted.append(
            {
                **row,
                "encounter_id": f"ZZCOPY{i}",
                "note": row["note"].replace("CHIEF COMPLAINT", "CHIEF COMPLAINT "),
            }
        )
    path = tmp_path / "aci_with_copies.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows + planted)
    _r, layout, res = _run(
        tmp_path, tiny_model_dir, [f"data.sources.aci.path={path}", "data.sources.aci.limit=13"]
    )
    d = res.manifest["counts"]["dedup"]
    assert d["in"] == d["kept"] + d["exact_duplicate"] + d["near_duplicate"]
    assert d["dropped_by_source"]["aci"] and sum(d["dropped_by_source"]["aci"].values()) == 3
    clusters = [
        json.loads(x) for x in (layout.prepared / "dedup_clusters.jsonl").read_text().splitlines()
    ]
    survivors = {c["survivor"]["note_id"] for c in clusters}
    assert not any(s.startswith("ZZCOPY") for s in survivors), "originals survive (smaller id)"
    for c in clusters:  # the cluster report holds ids only, never text
        assert set(c) == {"survivor", "members"}
        assert all(set(m) == {"source", "note_id"} for m in [c["survivor"], *c["members"]])


def test_data_card_json_and_html(tmp_path, tiny_model_dir):
    r, layout, res = _run(tmp_path, tiny_model_dir)
    card = json.loads((layout.prepared / "data_card.json").read_text())
    assert card["counts"] == res.manifest["counts"]
    cov = card["section_coverage"]["aci"]
    assert cov["chief_complaint"] > 0.9 and cov["hpi"] > 0.9  # ACI notes all have these
    assert all(0 <= v <= 1 for c in card["section_coverage"].values() for v in c.values())
    kept = res.manifest["counts"]["dedup"]["kept"]
    assert card["note_chars"]["aci"]["n"] + card["note_chars"]["mts"]["n"] == kept
    html = (layout.prepared / "data_card.html").read_text()
    assert html.count("data:image/png;base64") == 3  # coverage, note lengths, token lengths
    names = _aci_names(r)
    assert not any(n in html for n in names if len(n) > 3), "aggregates only, no text"


def test_mention_task_through_prepare(tmp_path, tiny_model_dir):
    _r, layout, res = _run(
        tmp_path,
        tiny_model_dir,
        [
            "data.tasks.arrest={type: mention, question: 'Cardiac arrest mentioned?', "
            "patterns: [cardiac arrest, code blue, ROSC, CPR, PEA]}",
            "data.sources.aci.tasks=[assessment_plan, arrest]",
        ],
    )
    c = res.manifest["counts"]["tasks"]["arrest<-aci"]
    assert c["records"] == c["notes_in"] == 20
    labels = [
        json.loads(x)["completion"]
        for s in ("train", "valid", "test")
        for x in (layout.prepared / "records" / f"{s}.jsonl").read_text().splitlines()
        if json.loads(x)["task"] == "arrest"
    ]
    assert len(labels) == 20 and set(labels) <= {"yes", "no"}


def test_section_headers_extend_the_lexicon_from_the_recipe(tmp_path, tiny_model_dir):
    """``data.section_headers`` adds spellings (to a canonical section or a new one) that the
    mdm task and the data card then see; a task naming an undefined section is refused."""
    path = tmp_path / "notes.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "mrn", "note"])
        for i in range(6):
            w.writerow([f"n{i}", f"p{i}",
                        f"REASON FOR ENCOUNTER: fall {i}\nHPI: tripped on stairs.\n"
                        f"NURSING TRIAGE: ESI {i % 3 + 2}, ambulatory.\n"
                        f"Clinical reasoning: no fracture; discharge home {i}.\n"])  # fmt: skip
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"""name: headers
model: {{name: {tiny_model_dir}}}
data:
  sources:
    - {{name: ed, path: {path}, columns: {{note_id: id, patient_id: mrn, text: note}},
       tasks: [ed_mdm]}}
  tasks:
    ed_mdm: {{type: mdm, inputs: [chief_complaint, hpi, triage], targets: [mdm]}}
  section_headers: {{reason for encounter: chief_complaint, nursing triage: triage,
                     clinical reasoning: mdm}}
  phi: {{policy: report}}
  split: {{valid: 0.0, test: 0.0}}
train: [{{name: sft, kind: sft, tasks: [ed_mdm], max_steps: 1}}]
evaluate: {{models: [base]}}
"""
    )
    r = load_recipe(str(recipe), [f"run_dir={tmp_path / 'run'}", "data.workers=1"])
    res = prepare(r, RunLayout(r.run_path), force=True)
    assert res.manifest["counts"]["tasks"]["ed_mdm<-ed"]["records"] == 6
    recs = [
        json.loads(x) for x in (res.out_dir / "records" / "train.jsonl").read_text().splitlines()
    ]
    assert all("ESI" in x["input"] and "fall" in x["input"] for x in recs)
    assert all(x["completion"].startswith("no fracture;") for x in recs)
    card = json.loads((res.out_dir / "data_card.json").read_text())
    assert "triage" in json.dumps(card)
    # without the new name defined, the task's section is unknown: a recipe error
    from clinitune.errors import RecipeError

    with pytest.raises(RecipeError, match="unknown section 'triage'"):
        load_recipe(str(recipe), [f"run_dir={tmp_path / 'run'}", "data.section_headers={}"])
    with pytest.raises(RecipeError, match="extra lexicon key"):
        load_recipe(str(recipe), ["data.section_headers={'x': 'Not Snake'}"])
