"""``clinitune prepare``: raw exports -> records -> patient-level splits -> token shards.

Reads the recipe's ``data`` section and the model's tokenizer; writes into ``<run>/prepared``:

- ``records/{train,valid,test}.jsonl``  chat / text records with provenance (PHI: stays on site)
- ``tokens/{train,valid,test}.parquet`` input_ids, labels (-100 on prompts), seq_lengths
  (document boundaries inside packed rows), provenance
- ``quarantine.jsonl``                 rows that could not be used, with a reason code
- ``dedup_clusters.jsonl``             duplicate clusters, by (source, note id)
- ``data_card.{html,json}``, ``manifest.json``  counts at every step, hashes, versions

Memory stays bounded: sources are streamed into chunk files of ``data.chunk_size`` notes, the
per-note steps run chunk by chunk on all cores (:mod:`clinitune.data.chunks`), and only what
is global by nature stays in RAM: dedup signatures (512 B per note), patient ids per split, and
a few integers per row for mixing. Steps, in order:

1. ingest   -> ``.work/notes/*.parquet``   (quarantine as rows are read)
2. scan     -> PHI gate, dedup sketches     (per chunk, parallel)
3. link     -> dedup clusters and survivors (all notes, one process)
4. build    -> sections, tasks, patient split, tokenize (per chunk, parallel)
5. merge    -> records, mixing to target shares, CPT packing, token shards, data card

Every step keeps the books: in = kept + dropped (by reason) + quarantined.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clinitune.data.card import CardStats, write_data_card
from clinitune.data.chunks import TOKEN_SCHEMA, build_chunk, load_sketch, scan_chunk, write_notes
from clinitune.data.executor import Pool, run_chunks
from clinitune.data.ingest import Note, SourceReader
from clinitune.data.split import SPLITS
from clinitune.errors import StageError
from clinitune.models import model_identity, resolve_model
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


def read_records(prepared: Path, split: str) -> list[dict[str, Any]]:
    path = prepared / "records" / f"{split}.jsonl"
    if not path.exists():
        raise StageError(f"{path} not found: run `clinitune prepare` first")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def token_path(prepared: Path, split: str) -> Path:
    return prepared / "tokens" / f"{split}.parquet"


# ------------------------------------------------------------------------------- 1. ingest
def _ingest(
    recipe: Recipe, out: Path, work: Path, counts: dict[str, Any], warnings: list[str]
) -> list[dict[str, Any]]:
    """Stream every source into chunk files; quarantined rows go straight to disk."""
    data = recipe.data
    chunks: list[dict[str, Any]] = []

    def flush(src_name: str, buf: list[Note]) -> None:
        k = len(chunks)
        path = work / "notes" / f"{k:05d}.parquet"
        write_notes(path, buf)
        chunks.append({"index": k, "source": src_name, "notes": str(path), "n": len(buf)})

    with open(out / "quarantine.jsonl", "w", encoding="utf-8") as qf:

        def quarantine(row: dict[str, Any]) -> None:
            qf.write(json.dumps(row, ensure_ascii=False) + "\n")

        for src in data.sources:
            reader = SourceReader(src, recipe.resolve_path(src.path))
            buf: list[Note] = []
            for note in track(reader.notes(quarantine), f"ingest {src.name}", unit="note"):
                buf.append(note)
                if len(buf) >= data.chunk_size:
                    flush(src.name, buf)
                    buf = []
            if buf:
                flush(src.name, buf)
            counts["ingest"][src.name] = reader.counts
            if not reader.patient_column:
                warnings.append(
                    f"source {src.name!r} has no patient column: splitting by note id, so one "
                    "patient's notes may land in different splits (leakage risk)"
                )
    return chunks


# --------------------------------------------------------------------------------- 2. scan
def _phi_counts(data: Any, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Findings are counted by type, never printed; ``block`` stops the run."""
    spec = data.phi
    if spec.policy == "off":
        return {"policy": "off"}
    by_type: Counter[str] = Counter()
    for r in results:
        by_type.update(r["findings_by_type"])
    total = sum(r["notes"] for r in results)
    notes_with = sum(r["notes_with_findings"] for r in results)
    if spec.policy == "block" and by_type:
        summary = ", ".join(f"{k} {v}" for k, v in sorted(by_type.items()))
        raise StageError(
            f"PHI gate (policy: block): {notes_with} of {total} notes contain possible "
            f"identifiers ({summary}); de-identify them, or set data.phi.policy to redact"
        )
    return {
        "policy": spec.policy,
        "notes_scanned": total,
        "notes_with_findings": notes_with,
        "findings_by_type": dict(sorted(by_type.items())),
    }


# --------------------------------------------------------------------------------- 3. link
def _link(
    data: Any, chunks: list[dict[str, Any]], work: Path, out: Path
) -> tuple[list[str | None], dict[str, Any]]:
    """Dedup over all notes: exact and near duplicates within and across sources, one survivor
    per cluster (the smallest (source, note id)). Writes a keep mask per chunk and
    ``dedup_clusters.jsonl``; returns the mask paths and the counts."""
    spec = data.dedup
    n_in = sum(c["n"] for c in chunks)
    cluster_path = out / "dedup_clusters.jsonl"
    if not (spec.exact or spec.near) or not chunks:
        cluster_path.write_text("")
        return [None] * len(chunks), {"in": n_in, "kept": n_in, "enabled": False}
    from clinitune.data.dedup import DedupConfig, Sketches, link

    cfg = DedupConfig(
        threshold=spec.threshold,
        num_perm=spec.num_perm,
        shingle=spec.shingle,
        exact=spec.exact,
        near=spec.near,
    )
    parts = [load_sketch(Path(c["sketch"])) for c in chunks]
    keys: list[tuple[str, str]] = []
    for c in chunks:
        ids = pq.read_table(c["clean"], columns=["note_id"]).column("note_id").to_pylist()
        keys += [(c["source"], i) for i in ids]
    res = link(Sketches.concat(parts, cfg.num_perm if cfg.near else 0), keys, cfg)
    del parts
    keep = np.asarray(res.keep, dtype=bool)
    masks: list[str | None] = []
    lo = 0
    by_source: dict[str, Counter[str]] = {s.name: Counter() for s in data.sources}
    for c in chunks:
        path = work / "keep" / f"{c['index']:05d}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, keep[lo : lo + c["n"]])
        masks.append(str(path))
        for r in res.reason[lo : lo + c["n"]]:
            if r is not None:
                by_source[c["source"]][r] += 1
        lo += c["n"]
    with open(cluster_path, "w", encoding="utf-8") as f:
        for cl in res.clusters:
            row = {
                "survivor": {"source": keys[cl[0]][0], "note_id": keys[cl[0]][1]},
                "members": [{"source": keys[i][0], "note_id": keys[i][1]} for i in cl[1:]],
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return masks, {
        **res.counts,
        "dropped_by_source": {k: dict(v) for k, v in by_source.items()},
        "config": {"threshold": spec.threshold, "shingle": spec.shingle, "num_perm": spec.num_perm},
    }


# -------------------------------------------------------------------------------- 5. merge
def _mix_plan(
    data: Any, parts: list[tuple[Path, int]], seed: int
) -> tuple[dict[str, tuple[int, set[int]]], dict[str, Any]]:
    """Per mixed task: (whole repeats, task-local row indices taken once more) so that each
    task's share of the training tokens matches its weight among the tasks named in the mix.
    Tasks not in the mix are kept once. Deterministic for a given seed."""
    weights = data.mix
    tokens: Counter[str] = Counter()
    n_rows: Counter[str] = Counter()
    for path, _ in parts:
        t = pq.read_table(path, columns=["task", "n_tokens"])
        for g in (
            t.group_by("task").aggregate([("n_tokens", "sum"), ("n_tokens", "count")]).to_pylist()
        ):
            tokens[g["task"]] += g["n_tokens_sum"]
            n_rows[g["task"]] += g["n_tokens_count"]
    mixed = [t for t in sorted(n_rows) if t in weights]
    total_w = sum(weights[t] for t in mixed) or 1.0
    total_tokens = sum(tokens[t] for t in mixed)
    rng = random.Random(seed)
    plan: dict[str, tuple[int, set[int]]] = {}
    report: dict[str, Any] = {}
    for t in mixed:
        factor = total_tokens * weights[t] / total_w / tokens[t] if tokens[t] else 0.0
        whole, frac = int(factor), factor - int(factor)
        extra = set(rng.sample(range(n_rows[t]), round(frac * n_rows[t])))
        plan[t] = (whole, extra)
        report[t] = {
            "weight": weights[t],
            "tokens_before": tokens[t],
            "factor": round(factor, 4),
            "rows_before": n_rows[t],
            "rows_after": whole * n_rows[t] + len(extra),
        }
    for t in sorted(set(weights) - set(n_rows)):
        report[t] = {
            "weight": weights[t],
            "tokens_before": 0,
            "tokens_after": 0,
            "note": "no training rows for this task",
        }
    return plan, report


_PROV = ["task", "source", "note_id", "patient_id", "record"]


def _list_array(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), pa.array(values.astype(np.int32))
    )


class _Packer:
    """Concatenates one task's raw-text rows and cuts them into rows of exactly ``max_len``
    tokens (the last may be shorter). A document that does not fit continues in the next row
    as a new segment. ``seq_lengths`` records the segments, so the trainer restarts position
    ids at each one and attention never crosses documents (as in LLaMA/HEAL-style CPT, a cut
    document's tail starts without its head as context). A row's provenance is that of the
    document its first token comes from.

    Works on Arrow tables with numpy (a Python list per token cost ~20% of ``prepare`` at
    100k notes): the tokens of a table are appended to the carried partial row, cut at every
    multiple of ``max_len`` and at every document end; full rows are returned, the rest is
    carried into the next call."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.ids = np.empty(0, dtype=np.int32)  # tokens of the partial row (< max_len)
        self.lengths = np.empty(0, dtype=np.int64)  # its segments
        self.prov: pa.Table | None = None  # provenance of its first segment (one row)

    def add(self, table: pa.Table) -> pa.Table | None:
        if table.num_rows == 0:
            return None
        col = table.column("input_ids").combine_chunks()
        lens = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = pc.list_flatten(col).to_numpy(zero_copy_only=False)
        carry = len(self.ids)
        ids = np.concatenate([self.ids, flat.astype(np.int32)])
        doc_ends = carry + np.cumsum(lens)
        L = self.max_len
        n_full = len(ids) // L
        ends = np.union1d(
            np.concatenate([np.cumsum(self.lengths), doc_ends]), np.arange(1, n_full + 1) * L
        )
        starts = np.concatenate([[0], ends[:-1]])
        seg_len, seg_row = ends - starts, starts // L
        prov_src = table.select(_PROV)
        if self.prov is not None:
            prov_src = pa.concat_tables([self.prov, prov_src])

        # Provenance row of the document holding each row's first token: index 0 is the
        # carried partial row when there is one, then the rows of ``table``.
        shift = 0 if self.prov is None else 1

        def prov_at(pos: np.ndarray) -> np.ndarray:
            doc = np.searchsorted(doc_ends, pos, side="right") + shift
            return np.where(pos < carry, 0, doc)

        out = None
        if n_full:
            full = seg_row < n_full
            per_row = np.bincount(seg_row[full], minlength=n_full)
            seg_off = np.concatenate([[0], np.cumsum(per_row)])
            tok_off = np.arange(n_full + 1, dtype=np.int64) * L
            body = ids[: n_full * L]
            prov = prov_src.take(pa.array(prov_at(np.arange(n_full) * L)))
            out = self._table(prov, tok_off, body, seg_off, seg_len[full], per_row)
        rest = seg_row == n_full
        if rest.any():
            self.prov = prov_src.take(pa.array(prov_at(np.array([n_full * L]))))
        else:
            self.prov = None
        self.ids, self.lengths = ids[n_full * L :], seg_len[rest]
        return out

    def flush(self) -> pa.Table | None:
        if self.prov is None:
            return None
        n = len(self.ids)
        out = self._table(
            self.prov, np.array([0, n]), self.ids, np.array([0, len(self.lengths)]),
            self.lengths, np.array([len(self.lengths)]),
        )  # fmt: skip
        self.ids, self.lengths, self.prov = self.ids[:0], self.lengths[:0], None
        return out

    @staticmethod
    def _table(
        prov: pa.Table,
        tok_off: np.ndarray,
        ids: np.ndarray,
        seg_off: np.ndarray,
        seg_len: np.ndarray,
        per_row: np.ndarray,
    ) -> pa.Table:
        n_tokens = np.diff(tok_off)
        cols = {
            "input_ids": _list_array(tok_off, ids),
            "labels": _list_array(tok_off, ids),
            "seq_lengths": _list_array(seg_off, seg_len),
            "n_tokens": pa.array(n_tokens.astype(np.int32)),
            "n_loss_tokens": pa.array((n_tokens - per_row).astype(np.int32)),
            **{c: prov.column(c) for c in _PROV},
        }
        return pa.table(cols).select(TOKEN_SCHEMA.names).cast(TOKEN_SCHEMA)


def _merge_tokens(
    data: Any,
    split: str,
    parts: list[tuple[Path, int]],
    path: Path,
    plan: dict[str, tuple[int, set[int]]] | None,
    text_tasks: set[str],
) -> tuple[dict[str, Any], list[int]]:
    """Concatenate the token files ``parts`` (path, record offset) in order (record ids made
    global), repeat rows per the mix plan (pass 0 has every row once, pass p the rows repeated
    at least p+1 times, so copies are spread out), and pack raw-text rows on the training
    split. Columnar throughout (Arrow + numpy): no Python object per token."""
    pack = split == "train" and data.pack
    packers = {t: _Packer(data.max_seq_len) for t in text_tasks} if pack else {}
    passes = 1
    if plan:
        passes = max([w + (1 if extra else 0) for w, extra in plan.values()] + [1])
    extra_idx = {t: np.array(sorted(e), dtype=np.int64) for t, (_, e) in (plan or {}).items()}
    rows_out = tokens = loss_tokens = 0
    by_source: Counter[str] = Counter()
    by_task: Counter[str] = Counter()
    lengths: list[np.ndarray] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, TOKEN_SCHEMA) as writer:

        def emit(t: pa.Table | None) -> None:
            nonlocal rows_out, tokens, loss_tokens
            if t is None or t.num_rows == 0:
                return
            writer.write_table(t)
            n = t.column("n_tokens").to_numpy()
            rows_out += t.num_rows
            tokens += int(n.sum())
            loss_tokens += int(pc.sum(t.column("n_loss_tokens")).as_py())
            lengths.append(n)

        for p in range(passes):
            seen: Counter[str] = Counter()  # task-local row index, for the mix plan
            for part, off in parts:
                t = pq.read_table(part, schema=TOKEN_SCHEMA)
                if t.num_rows == 0:
                    continue
                for task in pc.unique(t.column("task")).to_pylist():
                    tt = t.filter(pc.equal(t.column("task"), task))
                    j = seen[task] + np.arange(tt.num_rows)
                    seen[task] += tt.num_rows
                    if plan is not None and task in plan:
                        whole, _ = plan[task]
                        if p == whole:
                            tt = tt.filter(pa.array(np.isin(j, extra_idx[task])))
                        elif p > whole:
                            continue
                    elif p > 0:
                        continue
                    if tt.num_rows == 0:
                        continue
                    tt = tt.set_column(
                        TOKEN_SCHEMA.get_field_index("record"),
                        TOKEN_SCHEMA.field("record"),
                        pc.add(tt.column("record"), pa.scalar(off, pa.int32())),
                    )
                    n_tok = tt.column("n_tokens")
                    by_task[task] += int(pc.sum(n_tok).as_py())
                    for g in tt.group_by("source").aggregate([("n_tokens", "sum")]).to_pylist():
                        by_source[g["source"]] += g["n_tokens_sum"]
                    emit(packers[task].add(tt) if task in packers else tt)
        for packer in packers.values():
            emit(packer.flush())
        if rows_out == 0:
            writer.write_table(TOKEN_SCHEMA.empty_table())
    return {
        "rows_out": rows_out,
        "tokens": tokens,
        "loss_tokens": loss_tokens,
        "tokens_by_source": dict(by_source),
        "tokens_by_task": dict(by_task),
        **({"packed": True, "packed_len": data.max_seq_len} if packers else {}),
    }, (np.concatenate(lengths).tolist() if lengths else [])


def _scan_link_build(
    recipe: Recipe,
    chunks: list[dict[str, Any]],
    weights: list[int],
    work: Path,
    out: Path,
    counts: dict[str, Any],
    run: dict[str, Any],
    model_path: Path,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Steps 2-4: PHI gate + dedup sketches per chunk, dedup over all notes, then sections,
    tasks, split and tokenization per chunk."""
    data = recipe.data
    data_json = data.model_dump(mode="json")
    # 2. PHI gate + dedup sketches, per chunk ---------------------------------------------
    for c in chunks:
        c["clean"] = str(work / "clean" / f"{c['index']:05d}.parquet")
        c["sketch"] = str(work / "sketch" / f"{c['index']:05d}.npz")
    scan_jobs = [
        {"notes": c["notes"], "clean": c["clean"], "sketch": c["sketch"], "data": data_json}
        for c in chunks
    ]
    scanned = run_chunks(scan_chunk, scan_jobs, desc="scan (PHI, dedup sketches)",
                         weights=weights, **run)  # fmt: skip
    counts["phi"] = _phi_counts(data, scanned)

    # 3. dedup over all notes -----------------------------------------------------------
    masks, counts["dedup"] = _link(data, chunks, work, out)

    # 4. sections, tasks, split, tokenize, per chunk ----------------------------------------
    tokenizer = {
        "path": str(model_path),
        "system_prompt": recipe.model.system_prompt,
        "chat_template_kwargs": recipe.model.chat_template_kwargs,
    }
    spec_by_name = {s.name: s for s in data.sources}
    build_jobs = [
        {
            "clean": c["clean"],
            "keep": m,
            "out": str(work / "build" / f"{c['index']:05d}"),
            "data": data_json,
            "tokenizer": tokenizer,
            "tasks": spec_by_name[c["source"]].tasks,
            "namespace": spec_by_name[c["source"]].patient_namespace or c["source"],
        }
        for c, m in zip(chunks, masks, strict=True)
    ]
    built = run_chunks(build_chunk, build_jobs, desc="build (sections, tasks, tokens)",
                       weights=weights, **run)  # fmt: skip

    return built, build_jobs


def prepare(recipe: Recipe, layout: RunLayout, *, force: bool = False) -> PrepareResult:
    out = layout.prepared
    fp, input_hashes = prepare_fingerprint(recipe)
    if not force and is_up_to_date(out, fp):
        return PrepareResult(out, read_manifest(out) or {}, skipped=True)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under accelerate launch / torchrun every rank would tokenize everything (and race on
        # the same files): prepare once, then launch training.
        raise StageError(
            "the prepared data is missing or out of date, and prepare does not run under a "
            "distributed launcher: run `clinitune prepare` once, then launch `clinitune train`"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    work = out / ".work"  # chunk files (note text: PHI); removed when prepare succeeds
    shutil.rmtree(work, ignore_errors=True)
    data = recipe.data
    model_path = resolve_model(recipe.model.name, recipe.model.revision)
    counts: dict[str, Any] = {"ingest": {}, "tasks": {}, "split": {}, "tokenize": {}}
    warnings: list[str] = []
    # 1. ingest -------------------------------------------------------------------------
    chunks = _ingest(recipe, out, work, counts, warnings)
    weights = [c["n"] for c in chunks]
    with Pool(data.workers if data.executor == "local" else 1, len(chunks)) as pool:
        run = {
            "workers": data.workers,
            "executor": data.executor,
            "work_dir": work,
            "pool": pool,
            "slurm": data.slurm if data.executor == "datatrove_slurm" else None,
        }
        built, build_jobs = _scan_link_build(
            recipe, chunks, weights, work, out, counts, run, model_path
        )

    # 5. merge --------------------------------------------------------------------------
    stats = CardStats()
    patients: dict[str, set[str]] = {s: set() for s in SPLITS}
    split_counts = {s: {"records": 0, "by_task": Counter()} for s in SPLITS}
    status: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
    for c, b in zip(chunks, built, strict=True):
        stats.add_chunk(c["source"], b["note_chars"], b["sections"], b["notes"])
        for task, tc in b["tasks"].items():
            acc = counts["tasks"].setdefault(
                f"{task}<-{c['source']}",
                {"notes_in": 0, "records": 0, "notes_used": 0, "skipped": Counter()},
            )
            for k in ("notes_in", "records", "notes_used"):
                acc[k] += tc[k]
            acc["skipped"].update(tc["skipped"])
        for s in SPLITS:
            patients[s].update(b["split"][s]["patients"])
            split_counts[s]["records"] += b["split"][s]["records"]
            split_counts[s]["by_task"].update(b["split"][s]["by_task"])
            status[s].update(b["tokenize"][s]["status"])
    for tc in counts["tasks"].values():
        tc["skipped"] = dict(tc["skipped"])
    leaked = (patients["train"] & patients["test"]) | (patients["train"] & patients["valid"])
    if leaked:  # impossible by construction; a bug if it happens
        raise AssertionError(f"{len(leaked)} patients in two splits")
    for s in SPLITS:
        counts["split"][s] = {
            "records": split_counts[s]["records"],
            "patients": len(patients[s]),
            "by_task": dict(split_counts[s]["by_task"]),
        }
    del patients
    if not split_counts["train"]["records"]:
        raise StageError("no training records after splitting: check the sources and tasks")

    chunk_dirs = [Path(j["out"]) for j in build_jobs]
    text_tasks = {t for t, spec in data.tasks.items() if spec.type == "cpt"}
    mix_report: dict[str, Any] | None = None
    token_lengths: dict[str, list[int]] = {}
    # Files in source order, then task order, then chunk order: independent of chunking.
    order = [
        (task, d, b)
        for src in data.sources
        for task in src.tasks
        for c, d, b in zip(chunks, chunk_dirs, built, strict=True)
        if c["source"] == src.name
    ]
    for s in SPLITS:
        rec_path = out / "records" / f"{s}.jsonl"
        rec_path.parent.mkdir(parents=True, exist_ok=True)
        parts: list[tuple[Path, int]] = []
        n = 0
        with open(rec_path, "wb") as f:
            for task, d, b in order:
                parts.append((d / f"tokens-{s}.{task}.parquet", n))
                n += b["split"][s]["by_task"].get(task, 0)
                with open(d / f"records-{s}.{task}.jsonl", "rb") as part:
                    shutil.copyfileobj(part, f)
        plan = None
        if s == "train" and data.mix:
            plan, mix_report = _mix_plan(data, parts, recipe.seed)
        tc, token_lengths[s] = _merge_tokens(data, s, parts, token_path(out, s), plan, text_tasks)
        counts["tokenize"][s] = {"records_in": n, "status": dict(status[s]), **tc}
        if plan is not None and mix_report is not None:
            for t in plan:
                mix_report[t]["tokens_after"] = tc["tokens_by_task"].get(t, 0)
    shutil.rmtree(work, ignore_errors=True)

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
            "chunks": len(chunks),
            "tokenizer": built[0]["tokenizer_info"],  # every build worker loads it
        },
    )
    return PrepareResult(out, manifest, skipped=False)
