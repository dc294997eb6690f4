"""The per-chunk steps of ``prepare``: what runs in worker processes (or cluster tasks).

``prepare`` streams each source into chunk files of ``data.chunk_size`` notes
(``.work/notes/NNNNN.parquet``) and then maps two steps over the chunks:

- :func:`scan_chunk`   PHI gate (count / redact) and dedup sketches (digest + MinHash).
- :func:`build_chunk`  drop duplicates, section coverage, task records, patient split, tokenize.

Between them the driver links the sketches of *all* notes (dedup is global); after them it
merges the chunk outputs (mixing, packing). Each step reads and writes files only and returns a
JSON-able dict of counts, so any executor can run it: the in-process loop, a process pool, or
datatrove's executors. Counts never contain note text (PHI).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clinitune.data.ingest import Note

NOTE_SCHEMA = pa.schema(
    [
        ("note_id", pa.string()),
        ("patient_id", pa.string()),
        ("source", pa.string()),
        ("text", pa.string()),
        ("dialogue", pa.string()),
        ("meta", pa.string()),  # JSON object of the mapped metadata columns
    ]
)

TOKEN_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("seq_lengths", pa.list_(pa.int32())),  # documents packed in the row, in order
        ("n_tokens", pa.int32()),
        ("n_loss_tokens", pa.int32()),
        ("task", pa.string()),
        ("source", pa.string()),
        ("note_id", pa.string()),  # the first document's, for packed rows
        ("patient_id", pa.string()),
        ("record", pa.int32()),
    ]
)

# Objects that are expensive to build (tokenizer, PHI scanner) are made once per process.
_CACHE: dict[str, Any] = {}


def write_notes(path: Path, notes: list[Note]) -> None:
    table = pa.Table.from_pydict(
        {
            "note_id": [n.note_id for n in notes],
            "patient_id": [n.patient_id for n in notes],
            "source": [n.source for n in notes],
            "text": [n.text for n in notes],
            "dialogue": [n.dialogue for n in notes],
            "meta": [json.dumps(n.meta, ensure_ascii=False) for n in notes],
        },
        schema=NOTE_SCHEMA,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def read_notes(path: Path) -> list[Note]:
    t = pq.read_table(path, schema=NOTE_SCHEMA).to_pydict()
    return [
        Note(nid, pid, src, text, dia, json.loads(meta))
        for nid, pid, src, text, dia, meta in zip(
            t["note_id"],
            t["patient_id"],
            t["source"],
            t["text"],
            t["dialogue"],
            t["meta"],
            strict=True,
        )
    ]


def dedup_text(note: Note) -> str:
    """What dedup compares: the whole note content, so identical short targets with different
    dialogues are not duplicates."""
    return note.text + ("\n" + note.dialogue if note.dialogue else "")


# ------------------------------------------------------------------------------------ scan
def _scanner(phi: dict[str, Any]) -> Any:
    key = "phi:" + json.dumps(phi, sort_keys=True)
    if key not in _CACHE:
        from clinitune.data.phi import PhiScanner

        _CACHE[key] = PhiScanner(
            lexicon=phi["lexicon"], extra_patterns=phi["extra_patterns"], types=phi["types"]
        )
    return _CACHE[key]


def scan_chunk(job: dict[str, Any]) -> dict[str, Any]:
    """PHI gate + dedup sketches of one chunk.

    job: ``notes`` (input chunk), ``clean`` (output chunk, redacted if the policy says so),
    ``sketch`` (output .npz), ``data`` (the recipe's data section as JSON)."""
    from clinitune.data.dedup import DedupConfig, sketch
    from clinitune.data.phi import count_by_type, redact

    data = job["data"]
    phi = data["phi"]
    notes = read_notes(Path(job["notes"]))
    by_type: Counter[str] = Counter()
    notes_with = 0
    if phi["policy"] != "off":
        scanner = _scanner(phi)
        for note in notes:
            names = [note.meta[f] for f in phi["name_fields"] if note.meta.get(f, "").strip()]
            found_any = False
            for field in ("text", "dialogue"):
                value = getattr(note, field)
                if not value:
                    continue
                findings = scanner.scan(value, names=names)
                if findings:
                    found_any = True
                    by_type.update(count_by_type(findings))
                    if phi["policy"] == "redact":
                        setattr(note, field, redact(value, findings))
            notes_with += found_any
    write_notes(Path(job["clean"]), notes)

    dd = data["dedup"]
    if dd["exact"] or dd["near"]:
        cfg = DedupConfig(
            threshold=dd["threshold"],
            num_perm=dd["num_perm"],
            shingle=dd["shingle"],
            exact=dd["exact"],
            near=dd["near"],
        )
        sk = sketch([dedup_text(n) for n in notes], cfg)
        digests = np.frombuffer(
            b"".join(d if d is not None else bytes(16) for d in sk.digests), dtype=np.uint8
        ).reshape(len(notes), 16)
        empty = np.array([d is None for d in sk.digests], dtype=bool)
        path = Path(job["sketch"])
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".tmp"), "wb") as f:
            np.savez(f, digests=digests, empty=empty, sig=sk.sig)
        path.with_suffix(".tmp").replace(path)
    return {
        "notes": len(notes),
        "notes_with_findings": notes_with,
        "findings_by_type": dict(by_type),
    }


def load_sketch(path: Path) -> Any:
    from clinitune.data.dedup import Sketches

    z = np.load(path)
    digests = [None if e else bytes(d) for d, e in zip(z["digests"], z["empty"], strict=True)]
    return Sketches(digests, z["sig"])


# ----------------------------------------------------------------------------------- build
def _formatter(job: dict[str, Any]) -> Any:
    key = "fmt:" + json.dumps(job["tokenizer"], sort_keys=True)
    if key not in _CACHE:
        from clinitune.data.pack import ChatFormatter
        from clinitune.models import load_tokenizer

        t = job["tokenizer"]
        _CACHE[key] = ChatFormatter(
            load_tokenizer(Path(t["path"])), t["system_prompt"], t["chat_template_kwargs"]
        )
    return _CACHE[key]


def _data_spec(data: dict[str, Any]) -> Any:
    key = "data:" + json.dumps(data, sort_keys=True)
    if key not in _CACHE:
        from clinitune.recipe import DataSpec

        _CACHE[key] = DataSpec.model_validate(data)
    return _CACHE[key]


def _lexicon(extra: dict[str, str]) -> Any:
    key = "lexicon:" + json.dumps(extra, sort_keys=True)
    if key not in _CACHE:
        from clinitune.data.sections import build_lexicon

        _CACHE[key] = build_lexicon(extra)
    return _CACHE[key]


def build_chunk(job: dict[str, Any]) -> dict[str, Any]:
    """Records and token rows of one chunk's surviving notes.

    job: ``clean`` (input chunk), ``keep`` (.npy bool mask from dedup, or None), ``out``
    (directory for ``records-<split>.<task>.jsonl`` and ``tokens-<split>.<task>.parquet``),
    ``data``, ``tokenizer``, ``tasks`` (task names of this chunk's source), ``namespace``
    (the patient-id space)."""
    from clinitune.data import tasks as task_registry
    from clinitune.data.pack import tokenize_chats, tokenize_texts
    from clinitune.data.split import SPLITS, assign_split

    data = _data_spec(job["data"])
    notes = read_notes(Path(job["clean"]))
    if job["keep"] is not None:
        keep = np.load(job["keep"])
        notes = [n for n, k in zip(notes, keep, strict=True) if k]
    if data.section_headers:
        lexicon = _lexicon(data.section_headers)
        for n in notes:
            n.lexicon = lexicon
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)

    # data card aggregates (no text)
    note_chars = [len(n.text) for n in notes]
    sections: Counter[str] = Counter()
    for n in notes:
        sections.update(set(n.sections) - {"preamble"})

    tasks: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    for task in job["tasks"]:
        spec = data.tasks[task]
        skipped: Counter[str] = Counter()
        made = 0
        for note in notes:
            res = task_registry.build(note, task, spec)
            if isinstance(res, str):
                skipped[res] += 1
            else:
                records += res
                made += len(res)
        tasks[task] = {
            "notes_in": len(notes),
            "records": made,
            "notes_used": len(notes) - sum(skipped.values()),
            "skipped": dict(skipped),
        }

    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    patients: dict[str, set[str]] = {s: set() for s in SPLITS}
    for r in records:
        # Patients are namespaced (default: by source; ids of different exports are different
        # people unless the recipe gives the sources one patient_namespace).
        key = f"{job['namespace']}::{r['patient_id']}"
        s = assign_split(key, valid=data.split.valid, test=data.split.test, salt=data.split.salt)
        r["split"] = s
        by_split[s].append(r)
        patients[s].add(key)

    fmt = _formatter(job)
    tokenize: dict[str, Any] = {}
    for s in SPLITS:
        status: Counter[str] = Counter()
        for task in job["tasks"]:  # one file per (split, task): the merge orders them
            recs = [r for r in by_split[s] if r["task"] == task]
            with open(out / f"records-{s}.{task}.jsonl", "w", encoding="utf-8") as f:
                for r in recs:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
            # one batched tokenizer call per kind (documents / chats) for the whole file
            text_idx = [i for i, r in enumerate(recs) if r["kind"] == "text"]
            chat_idx = [i for i, r in enumerate(recs) if r["kind"] != "text"]
            tokenized: dict[int, Any] = {}
            texts = tokenize_texts(fmt, [recs[i]["text"] for i in text_idx], data.max_seq_len)
            tokenized.update(zip(text_idx, texts, strict=True))
            chats = tokenize_chats(fmt, [recs[i] for i in chat_idx], data.max_seq_len,
                                   data.overlong)  # fmt: skip
            tokenized.update(zip(chat_idx, chats, strict=True))
            rows: list[dict[str, Any]] = []
            for i, r in enumerate(recs):
                prov = {
                    "task": r["task"],
                    "source": r["source"],
                    "note_id": r["note_id"],
                    "patient_id": r["patient_id"],
                    "record": i,  # index in this file; the merge makes it global
                }
                if r["kind"] == "text":
                    chunks = tokenized[i]
                    status["ok" if len(chunks) == 1 else "chunked"] += 1
                    rows += [{**c, "seq_lengths": [c["n_tokens"]], **prov} for c in chunks]
                    continue
                row, st = tokenized[i]
                status[st] += 1
                if row is not None:
                    rows.append({**row, "seq_lengths": [row["n_tokens"]], **prov})
            pq.write_table(
                pa.Table.from_pylist(rows, schema=TOKEN_SCHEMA),
                out / f"tokens-{s}.{task}.parquet",
            )
        tokenize[s] = {"records_in": len(by_split[s]), "status": dict(status)}
    return {
        "notes": len(notes),
        "note_chars": note_chars,
        "sections": dict(sections),
        "tasks": tasks,
        "split": {
            s: {
                "records": len(by_split[s]),
                "patients": sorted(patients[s]),
                "by_task": dict(Counter(r["task"] for r in by_split[s])),
            }
            for s in SPLITS
        },
        "tokenize": tokenize,
        # for the manifest: the driver need not load the tokenizer itself (a transformers +
        # torch import, ~3.5 s of serial time)
        "tokenizer_info": {
            "name_or_path": job["tokenizer"]["path"],
            "vocab_size": len(fmt.tok),
            "eos_token_id": fmt.tok.eos_token_id,
        },
    }
