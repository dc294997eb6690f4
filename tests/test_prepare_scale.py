"""Chunked, parallel prepare: the output does not depend on chunk size, worker count or
executor; CPT packing keeps document boundaries; the trainer's collator honours them."""

import json
import os

import pyarrow.parquet as pq
import pytest

from clinitune.data.prepare import prepare, token_path
from clinitune.recipe import load_recipe
from clinitune.run import RunLayout

LIMITS = [
    "data.sources.general.limit=40",
    "data.sources.literature.limit=30",
    "data.sources.encounters.limit=24",
    "data.sources.mts.limit=60",
    "data.max_seq_len=256",
]


def _prepare(tmp_path, model_dir, name, extra=()):
    r = load_recipe(
        "heal_soap", [f"model.name={model_dir}", f"run_dir={tmp_path / name}", *LIMITS, *extra]
    )
    layout = RunLayout(r.run_path)
    return layout, prepare(r, layout, force=True)


def _snapshot(layout):
    p = layout.prepared
    out = {"clusters": (p / "dedup_clusters.jsonl").read_text()}
    for s in ("train", "valid", "test"):
        out[f"records/{s}"] = (p / "records" / f"{s}.jsonl").read_text()
        out[f"tokens/{s}"] = pq.read_table(token_path(p, s)).to_pylist()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("ref")
    layout, res = _prepare(tmp, tiny_model_dir, "ref", ["data.workers=1"])
    assert res.manifest["chunks"] == 4  # one chunk per source
    return layout, res


def test_chunks_and_workers_do_not_change_the_output(tmp_path, tiny_model_dir, reference):
    ref_layout, ref = reference
    layout, res = _prepare(tmp_path, tiny_model_dir, "par", ["data.chunk_size=9", "data.workers=2"])
    assert res.manifest["chunks"] > 10
    assert res.manifest["counts"] == ref.manifest["counts"]
    assert _snapshot(layout) == _snapshot(ref_layout)
    assert not (layout.prepared / ".work").exists()  # chunk files (PHI) are removed


def test_datatrove_local_executor_gives_the_same_output(tmp_path, tiny_model_dir, reference):
    pytest.importorskip("datatrove")
    ref_layout, ref = reference
    layout, res = _prepare(
        tmp_path,
        tiny_model_dir,
        "dt",
        ["data.chunk_size=25", "data.workers=2", "data.executor=datatrove"],
    )
    assert res.manifest["counts"] == ref.manifest["counts"]
    assert _snapshot(layout) == _snapshot(ref_layout)


def test_cpt_rows_are_packed_to_fixed_length_with_boundaries(reference):
    layout, res = reference
    rows = pq.read_table(token_path(layout.prepared, "train")).to_pylist()
    recipe_len = 256
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    for task in ("general_cpt", "literature_cpt", "notes_cpt", "dialogue_cpt"):
        packed = by_task[task]
        assert all(r["n_tokens"] == recipe_len for r in packed[:-1]), task
        assert packed[-1]["n_tokens"] <= recipe_len
        assert any(len(r["seq_lengths"]) > 1 for r in packed), task
        for r in packed:
            assert sum(r["seq_lengths"]) == r["n_tokens"] == len(r["input_ids"])
            assert r["n_loss_tokens"] == r["n_tokens"] - len(r["seq_lengths"])
    sft = [r for t, rs in by_task.items() if not t.endswith("_cpt") for r in rs]
    assert sft
    for r in sft:  # SFT rows: one segment each
        assert r["seq_lengths"] == [r["n_tokens"]]
    tok = res.manifest["counts"]["tokenize"]["train"]
    assert tok["packed"] and tok["rows_out"] == len(rows)
    # valid/test keep one row per document chunk (per-document held-out scores)
    for r in pq.read_table(token_path(layout.prepared, "test")).to_pylist():
        assert r["seq_lengths"] == [r["n_tokens"]]


def test_packing_loses_no_token(tmp_path, tiny_model_dir, reference):
    """Unpacked and packed training tokens are the same stream, in the same order."""
    layout, _ = _prepare(tmp_path, tiny_model_dir, "nopack", ["data.pack=false", "data.workers=1"])
    ref_layout, _ = reference
    unpacked = pq.read_table(token_path(layout.prepared, "train")).to_pylist()
    packed = pq.read_table(token_path(ref_layout.prepared, "train")).to_pylist()
    for task in ("general_cpt", "notes_cpt"):
        a = [t for r in unpacked if r["task"] == task for t in r["input_ids"]]
        b = [t for r in packed if r["task"] == task for t in r["input_ids"]]
        assert a == b and len(a) > 1000
        docs = [r["n_tokens"] for r in unpacked if r["task"] == task]
        assert len([r for r in packed if r["task"] == task]) < len(docs)


def test_segment_collator_equals_documents_one_at_a_time(tiny_model_dir):
    """The loss of a packed row equals the token-weighted loss of its documents run alone:
    attention does not cross the boundaries and no document predicts the next one."""
    import torch
    from transformers import AutoModelForCausalLM, DataCollatorWithFlattening

    from clinitune.train.runner import SegmentCollator, disable_kv_cache

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    disable_kv_cache(model)
    model.eval()
    docs = [torch.randint(5, 1000, (n,)).tolist() for n in (37, 64, 23)]
    row = {
        "input_ids": [t for d in docs for t in d],
        "labels": [t for d in docs for t in d],
        "seq_lengths": [len(d) for d in docs],
    }
    batch = SegmentCollator(DataCollatorWithFlattening())([row])
    assert batch["position_ids"][0].tolist() == [p for d in docs for p in range(len(d))]
    starts = [0, 37, 101]
    assert all(batch["labels"][0, s].item() == -100 for s in starts)
    with torch.no_grad():
        packed = model(**batch).loss.item()
        total = n = 0.0
        for d in docs:
            ids = torch.tensor([d])
            loss = model(input_ids=ids, labels=ids).loss.item()
            total += loss * (len(d) - 1)
            n += len(d) - 1
    assert packed == pytest.approx(total / n, rel=1e-4)


def test_manifest_counts_stay_balanced(reference):
    _, res = reference
    c = res.manifest["counts"]
    for src, ic in c["ingest"].items():
        assert ic["rows_in"] == ic["kept"] + ic["quarantined"], src
    d = c["dedup"]
    assert d["in"] == d["kept"] + d["exact_duplicate"] + d["near_duplicate"]
    assert d["in"] == sum(ic["kept"] for ic in c["ingest"].values())
    card = json.loads((res.out_dir / "data_card.json").read_text())
    assert card["counts"] == c


def test_a_5mb_note_is_chunked_not_dropped(tmp_path, tiny_model_dir):
    """Notes of several MB exist (long admissions): every step stays linear, nothing is lost."""
    import csv
    import time

    para = (
        "HPI: 67 yo M with chest pain radiating to the left arm, onset 2 hours ago. Seen by "
        "Dr. Smith on 03/04/2021, call 555-123-4567. John Miller is a 54-year-old man.\n"
        "MDM: ACS ruled out with serial troponins; plan stress test.\n"
    )
    big = "CHIEF COMPLAINT: chest pain\n" + para * (5_000_000 // len(para))
    path = tmp_path / "notes.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "mrn", "note"])
        w.writerow(["big", "p1", big])
        w.writerow(["small", "p2", "CHIEF COMPLAINT: cough\nHPI: two days of cough.\n"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"""name: big
model: {{name: {tiny_model_dir}}}
data:
  sources:
    - {{name: ed, path: {path}, columns: {{note_id: id, patient_id: mrn, text: note}},
       tasks: [notes_cpt]}}
  tasks: {{notes_cpt: {{type: cpt}}}}
  phi: {{policy: redact}}
  split: {{valid: 0.0, test: 0.0}}
  max_seq_len: 2048
train: [{{name: cpt, kind: cpt, tasks: [notes_cpt], max_steps: 1}}]
evaluate: {{models: [base]}}
"""
    )
    r = load_recipe(str(recipe), [f"run_dir={tmp_path / 'run'}", "data.workers=1"])
    t0 = time.perf_counter()
    res = prepare(r, RunLayout(r.run_path), force=True)
    assert time.perf_counter() - t0 < 90
    c = res.manifest["counts"]
    assert c["tokenize"]["train"]["status"] == {"chunked": 1, "ok": 1}
    assert c["tokenize"]["train"]["tokens"] > 1_000_000
    assert c["phi"]["findings_by_type"]["NAME"] > 10_000
    rows = pq.read_table(token_path(res.out_dir, "train")).to_pylist()
    assert all(r["n_tokens"] == 2048 for r in rows[:-1])


def test_prepare_refuses_to_run_on_every_rank(tmp_path, tiny_model_dir, monkeypatch, reference):
    from clinitune.errors import StageError

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(StageError, match="does not run under a distributed launcher"):
        _prepare(tmp_path, tiny_model_dir, "ranks")
    layout, _ = reference  # up to date: every rank may read it
    r = load_recipe("heal_soap", [f"model.name={tiny_model_dir}", f"run_dir={layout.root}",
                                  *LIMITS, "data.workers=1"])  # fmt: skip
    assert prepare(r, layout).skipped


def test_datatrove_slurm_executor_with_a_stand_in_scheduler(
    tmp_path, tiny_model_dir, reference, monkeypatch
):
    """The Slurm path end to end -- launch script, array tasks, completion markers, polling --
    with test stand-ins for sbatch/srun that run the array tasks on this machine."""
    import sys
    from pathlib import Path

    pytest.importorskip("datatrove")
    fake = Path(__file__).parent / "fake_slurm"
    bindir = Path(sys.executable).parent  # launch_pickled_pipeline lives next to python
    monkeypatch.setenv("PATH", f"{fake}:{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_LOG", str(tmp_path / "slurm.log"))
    ref_layout, ref = reference
    layout, res = _prepare(
        tmp_path,
        tiny_model_dir,
        "slurm",
        [
            "data.chunk_size=100",  # one array task per source: 4 per step
            "data.executor=datatrove_slurm",
            "data.slurm.partition=cpu",
            "data.slurm.poll_s=0.2",
            "data.slurm.timeout_s=120",
        ],
    )
    assert res.manifest["counts"] == ref.manifest["counts"]
    assert _snapshot(layout) == _snapshot(ref_layout)
    assert "launch_pickled_pipeline" in (tmp_path / "slurm.log").read_text()


def _reference_pack(docs: list[list[int]], max_len: int) -> list[tuple[list[int], list[int], int]]:
    """The packing rule written the plain way: (ids, seq_lengths, provenance doc) per row."""
    rows, ids, lens, first = [], [], [], None
    for d, doc in enumerate(docs):
        rest = list(doc)
        while rest:
            if first is None:
                first = d
            room = max_len - len(ids)
            piece, rest = rest[:room], rest[room:]
            ids += piece
            lens.append(len(piece))
            if len(ids) == max_len:
                rows.append((ids, lens, first))
                ids, lens, first = [], [], None
    if ids:
        rows.append((ids, lens, first))
    return rows


@pytest.mark.parametrize("max_len", [1, 7, 64])
def test_columnar_packer_equals_the_plain_rule(max_len):
    """The merge packs with numpy over Arrow tables, fed one table (chunk) at a time; it must
    cut exactly like the token-by-token rule, whatever the table boundaries: documents longer
    than a row, rows ending exactly at a document end, partial rows carried across tables."""
    import random

    import pyarrow as pa

    from clinitune.data.chunks import TOKEN_SCHEMA
    from clinitune.data.prepare import _Packer

    rng = random.Random(max_len)
    docs = [[rng.randrange(1000) for _ in range(rng.choice([1, 2, 5, 7, 13, 64, 150]))]
            for _ in range(200)]  # fmt: skip
    table = pa.Table.from_pylist(
        [
            {"input_ids": d, "labels": d, "seq_lengths": [len(d)], "n_tokens": len(d),
             "n_loss_tokens": len(d) - 1, "task": "cpt", "source": "s", "note_id": f"n{i}",
             "patient_id": "p", "record": i}
            for i, d in enumerate(docs)
        ],
        schema=TOKEN_SCHEMA,
    )  # fmt: skip
    packer, out, lo = _Packer(max_len), [], 0
    while lo < len(docs):
        n = rng.choice([1, 3, 17, 50])
        t = packer.add(table.slice(lo, n))
        lo += n
        if t is not None:
            out += t.to_pylist()
    t = packer.flush()
    out += t.to_pylist() if t is not None else []
    want = _reference_pack(docs, max_len)
    assert [(r["input_ids"], r["seq_lengths"], r["record"]) for r in out] == want
    assert all(r["labels"] == r["input_ids"] for r in out)
    assert all(r["n_tokens"] == len(r["input_ids"]) for r in out)
    assert all(r["n_loss_tokens"] == r["n_tokens"] - len(r["seq_lengths"]) for r in out)
    assert all(r["note_id"] == f"n{r['record']}" for r in out)
