"""``clinitune prepare``: raw exports -> records -> patient-level splits -> token shards.

Reads the recipe's ``data`` section and the model's tokenizer; writes into ``<run>/prepared``:

- ``records/{train,valid,test}.jsonl``  chat / text records with provenance (PHI: stays on site)
- ``tokens/{train,valid,test}.parquet`` input_ids, labels (-100 on prompts), provenance
- ``quarantine.jsonl``                 rows that could not be used, with a reason code
- ``manifest.json``                    counts at every step, hashes, versions, recipe section

Every step keeps the books: in = kept + dropped (by reason) + quarantined.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from clinitune.data import tasks as task_registry
from clinitune.data.card import CardStats, write_data_card
from clinitune.data.ingest import Note, ingest_source
from clinitune.data.pack import ChatFormatter, tokenize_chat, tokenize_text
from clinitune.data.split import SPLITS, assign_split
from clinitune.errors import StageError
from clinitune.models import load_tokenizer, model_identity, resolve_model
from clinitune.progress import track
from clinitune.recipe import Recipe
from clinitune.run import (
    RunLayout,
    fingerprint,
    is_up_to_date,
    read_manifest,
    sha256_file,
    write_manifest,
)


@dataclass
class PrepareResult:
    out_dir: Path
    manifest: dict[str, Any]
    skipped: bool


def prepare_config(recipe: Recipe) -> dict[str, Any]:
    m = recipe.model
    return {
        "data": recipe.data.model_dump(mode="json"),
        "tokenizer": {
            "model": m.name,
            "revision": m.revision,
            "system_prompt": m.system_prompt,
            "chat_template_kwargs": m.chat_template_kwargs,
        },
        "seed": recipe.seed,
    }


def prepare_fingerprint(recipe: Recipe) -> tuple[str, dict[str, str]]:
    """Recipe data section + source file hashes + the tokenizer's identity."""
    inputs = {s.name: sha256_file(recipe.resolve_path(s.path)) for s in recipe.data.sources}
    tokenizer = model_identity(resolve_model(recipe.model.name, recipe.model.revision))
    return fingerprint("prepare", prepare_config(recipe), inputs, [tokenizer]), inputs


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_records(prepared: Path, split: str) -> list[dict[str, Any]]:
    path = prepared / "records" / f"{split}.jsonl"
    if not path.exists():
        raise StageError(f"{path} not found: run `clinitune prepare` first")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def token_path(prepared: Path, split: str) -> Path:
    return prepared / "tokens" / f"{split}.parquet"


def _mix(
    rows: list[dict[str, Any]], weights: dict[str, float], seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Resample train rows so each mixed task's share of tokens matches its weight (among the
    tasks named in the mix; other tasks are kept as they are). Whole repeats plus a seeded
    random fraction: deterministic for a given seed."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r)
    mixed = [t for t in sorted(by_task) if t in weights]
    tokens = {t: sum(r["n_tokens"] for r in by_task[t]) for t in mixed}
    total_w = sum(weights[t] for t in mixed) or 1.0
    total_tokens = sum(tokens.values())
    rng = random.Random(seed)
    out = [r for t, rs in by_task.items() if t not in weights for r in rs]
    report: dict[str, Any] = {}
    for t in mixed:
        target = total_tokens * weights[t] / total_w
        factor = target / tokens[t] if tokens[t] else 0.0
        whole, frac = int(factor), factor - int(factor)
        picked = [r for r in by_task[t] for _ in range(whole)]
        extra = by_task[t][:]
        rng.shuffle(extra)
        picked += extra[: round(frac * len(extra))]
        out += picked
        report[t] = {
            "weight": weights[t],
            "tokens_before": tokens[t],
            "tokens_after": sum(r["n_tokens"] for r in picked),
            "factor": round(factor, 4),
            "rows_before": len(by_task[t]),
            "rows_after": len(picked),
        }
    missing = sorted(set(weights) - set(by_task))
    for t in missing:
        report[t] = {
            "weight": weights[t],
            "tokens_before": 0,
            "tokens_after": 0,
            "note": "no training rows for this task",
        }
    rng.shuffle(out)
    return out, report


def phi_gate(notes: list[tuple[Any, list[Note]]], data: Any) -> dict[str, Any]:
    """Scan every text that will be trained on (note text and dialogue). Findings are counted
    by type, never printed; ``redact`` rewrites the notes in place, ``block`` stops the run."""
    spec = data.phi
    if spec.policy == "off":
        return {"policy": "off"}
    from clinitune.data.phi import PhiScanner, count_by_type, redact

    scanner = PhiScanner(lexicon=spec.lexicon, extra_patterns=spec.extra_patterns, types=spec.types)
    by_type: Counter[str] = Counter()
    notes_with = 0
    total = 0
    for src, src_notes in notes:
        for note in track(src_notes, f"PHI gate {src.name}", unit="note"):
            total += 1
            names = [note.meta[f] for f in spec.name_fields if note.meta.get(f, "").strip()]
            found_any = False
            for field in ("text", "dialogue"):
                value = getattr(note, field)
                if not value:
                    continue
                findings = scanner.scan(value, names=names)
                if findings:
                    found_any = True
                    by_type.update(count_by_type(findings))
                    if spec.policy == "redact":
                        setattr(note, field, redact(value, findings))
            notes_with += found_any
    result = {
        "policy": spec.policy,
        "notes_scanned": total,
        "notes_with_findings": notes_with,
        "findings_by_type": dict(sorted(by_type.items())),
    }
    if spec.policy == "block" and by_type:
        summary = ", ".join(f"{k} {v}" for k, v in sorted(by_type.items()))
        raise StageError(
            f"PHI gate (policy: block): {notes_with} of {total} notes contain possible "
            f"identifiers ({summary}); de-identify them, or set data.phi.policy to redact"
        )
    return result


def dedup_notes(
    notes: list[tuple[Any, list[Note]]], data: Any
) -> tuple[list[tuple[Any, list[Note]]], dict[str, Any], list[dict[str, Any]]]:
    """Exact and near-duplicate notes within and across sources: one survivor per cluster,
    the smallest (source, note id). The whole note content is compared (text + dialogue), so
    identical short targets with different dialogues are not duplicates."""
    spec = data.dedup
    flat = [(src, n) for src, ns in notes for n in ns]
    if not (spec.exact or spec.near) or not flat:
        return notes, {"in": len(flat), "kept": len(flat), "enabled": False}, []
    from clinitune.data.dedup import DedupConfig, dedup

    texts = [n.text + ("\n" + n.dialogue if n.dialogue else "") for _, n in flat]
    keys = [(n.source, n.note_id) for _, n in flat]
    cfg = DedupConfig(
        threshold=spec.threshold,
        num_perm=spec.num_perm,
        shingle=spec.shingle,
        exact=spec.exact,
        near=spec.near,
    )
    res = dedup(
        texts,
        keys=keys,
        config=cfg,
        progress=lambda it: track(it, "dedup", total=len(texts), unit="note"),
    )
    kept: dict[str, list[Note]] = {src.name: [] for src, _ in notes}
    by_source: dict[str, Counter[str]] = {src.name: Counter() for src, _ in notes}
    for (src, n), keep, reason in zip(flat, res.keep, res.reason, strict=True):
        if keep:
            kept[src.name].append(n)
        else:
            by_source[src.name][reason or "duplicate"] += 1
    clusters = [
        {
            "survivor": {"source": keys[c[0]][0], "note_id": keys[c[0]][1]},
            "members": [{"source": keys[i][0], "note_id": keys[i][1]} for i in c[1:]],
        }
        for c in res.clusters
    ]
    counts = {
        **res.counts,
        "dropped_by_source": {k: dict(v) for k, v in by_source.items()},
        "config": {"threshold": spec.threshold, "shingle": spec.shingle, "num_perm": spec.num_perm},
    }
    return [(src, kept[src.name]) for src, _ in notes], counts, clusters


def prepare(recipe: Recipe, layout: RunLayout, *, force: bool = False) -> PrepareResult:
    out = layout.prepared
    fp, input_hashes = prepare_fingerprint(recipe)
    if not force and is_up_to_date(out, fp):
        return PrepareResult(out, read_manifest(out) or {}, skipped=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    data = recipe.data
    counts: dict[str, Any] = {"ingest": {}, "tasks": {}, "split": {}, "tokenize": {}}
    warnings: list[str] = []

    # 1. ingest -------------------------------------------------------------------------
    notes = []
    quarantine: list[dict[str, Any]] = []
    for src in data.sources:
        res = ingest_source(src, recipe.resolve_path(src.path))
        counts["ingest"][src.name] = res.counts
        quarantine += res.quarantined
        notes.append((src, res.notes))
        if not res.patient_column:
            warnings.append(
                f"source {src.name!r} has no patient column: splitting by note id, so one "
                "patient's notes may land in different splits (leakage risk)"
            )
    _write_jsonl(out / "quarantine.jsonl", quarantine)

    # 2. PHI gate, then dedup (on the de-identified text) ----------------------------------
    counts["phi"] = phi_gate(notes, data)
    notes, counts["dedup"], clusters = dedup_notes(notes, data)
    _write_jsonl(out / "dedup_clusters.jsonl", clusters)

    # section coverage and note lengths, for the data card (aggregates only)
    stats = CardStats()
    for src, src_notes in notes:
        for note in src_notes:
            stats.add_note(src.name, note.text, set(note.sections) - {"preamble"})

    # 3. tasks --------------------------------------------------------------------------
    records: list[dict[str, Any]] = []
    for src, src_notes in notes:
        for task in src.tasks:
            spec = data.tasks[task]
            skipped: Counter[str] = Counter()
            made = 0
            for note in track(src_notes, f"{task} <- {src.name}", unit="note"):
                res = task_registry.build(note, task, spec)
                if isinstance(res, str):
                    skipped[res] += 1
                else:
                    records += res
                    made += len(res)
            key = f"{task}<-{src.name}"
            counts["tasks"][key] = {
                "notes_in": len(src_notes),
                "records": made,
                "notes_used": len(src_notes) - sum(skipped.values()),
                "skipped": dict(skipped),
            }

    # 4. split by patient -----------------------------------------------------------------
    namespaces = {s.name: s.patient_namespace or s.name for s in data.sources}
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    patients: dict[str, set[str]] = {s: set() for s in SPLITS}
    for r in records:
        # Patients are namespaced (default: by source; ids of different exports are different
        # people unless the recipe gives the sources one patient_namespace).
        key = f"{namespaces[r['source']]}::{r['patient_id']}"
        s = assign_split(key, valid=data.split.valid, test=data.split.test, salt=data.split.salt)
        r["split"] = s
        by_split[s].append(r)
        patients[s].add(key)
    leaked = (patients["train"] & patients["test"]) | (patients["train"] & patients["valid"])
    if leaked:  # impossible by construction; a bug if it happens
        raise AssertionError(f"{len(leaked)} patients in two splits")
    for s in SPLITS:
        counts["split"][s] = {
            "records": len(by_split[s]),
            "patients": len(patients[s]),
            "by_task": dict(Counter(r["task"] for r in by_split[s])),
        }
        _write_jsonl(out / "records" / f"{s}.jsonl", by_split[s])
    if not by_split["train"]:
        raise StageError("no training records after splitting: check the sources and tasks")

    # 5. tokenize -----------------------------------------------------------------------
    tok = load_tokenizer(resolve_model(recipe.model.name, recipe.model.revision))
    fmt = ChatFormatter(tok, recipe.model.system_prompt, recipe.model.chat_template_kwargs)
    mix_report: dict[str, Any] | None = None
    token_lengths: dict[str, list[int]] = {}
    for s in SPLITS:
        rows: list[dict[str, Any]] = []
        status: Counter[str] = Counter()
        for i, r in enumerate(track(by_split[s], f"tokenize {s}", unit="rec")):
            prov = {
                "task": r["task"],
                "source": r["source"],
                "note_id": r["note_id"],
                "patient_id": r["patient_id"],
                "record": i,
            }
            if r["kind"] == "text":
                chunks = tokenize_text(fmt, r["text"], data.max_seq_len)
                status["ok" if len(chunks) == 1 else "chunked"] += 1
                rows += [{**c, **prov} for c in chunks]
                continue
            row, st = tokenize_chat(fmt, r, data.max_seq_len, data.overlong)
            status[st] += 1
            if row is not None:
                rows.append({**row, **prov})
        if s == "train" and data.mix:
            rows, mix_report = _mix(rows, data.mix, recipe.seed)
        token_lengths[s] = [r["n_tokens"] for r in rows]
        counts["tokenize"][s] = {
            "records_in": len(by_split[s]),
            "status": dict(status),
            "rows_out": len(rows),
            "tokens": sum(r["n_tokens"] for r in rows),
            "loss_tokens": sum(r["n_loss_tokens"] for r in rows),
            "tokens_by_source": dict(_sum_by(rows, "source")),
        }
        path = token_path(out, s)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=_SCHEMA), path)

    write_data_card(
        out, recipe.name, counts, stats, token_lengths, warnings=warnings, mix=mix_report
    )
    outputs = [p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"]
    manifest = write_manifest(
        out,
        stage="prepare",
        fp=fp,
        config=prepare_config(recipe),
        inputs=input_hashes,
        counts=counts,
        outputs=outputs,
        extra={
            "warnings": warnings,
            "mix": mix_report,
            "tokenizer": {
                "name_or_path": recipe.model.name,
                "vocab_size": len(tok),
                "eos_token_id": tok.eos_token_id,
            },
        },
    )
    return PrepareResult(out, manifest, skipped=False)


def _sum_by(rows: list[dict[str, Any]], key: str) -> Counter[str]:
    c: Counter[str] = Counter()
    for r in rows:
        c[r[key]] += r["n_tokens"]
    return c


_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("n_tokens", pa.int32()),
        ("n_loss_tokens", pa.int32()),
        ("task", pa.string()),
        ("source", pa.string()),
        ("note_id", pa.string()),
        ("patient_id", pa.string()),
        ("record", pa.int32()),
    ]
)
