"""Multiple-choice knowledge benchmarks from local files in their original formats, scored by
log-likelihood of each answer continuation (zero-shot, lm-evaluation-harness prompt styles).

- ``mmlu_csv``: headerless ``question, A, B, C, D, answer-letter[, subject]``; prompt "The
  following are multiple choice questions (with answers) about <subject>. ... Answer:", choices
  " A".." D" (lm-eval ``mmlu``).
- ``pubmedqa_json``: ``ori_pqal.json`` format; "Abstract: ... Question: ... Answer:", choices
  " yes"/" no"/" maybe" (lm-eval ``pubmedqa``).
- ``medmcqa_jsonl``: ``question, opa..opd, cop`` with 1-based ``cop`` (the original files; the
  HF copy is 0-based) -- "Question: ...\\nChoices:\\nA. ...\\nAnswer:", choices " A".." D".

acc: argmax of summed log-probability; acc_norm: argmax of log-probability per character of the
choice text (lm-eval's definitions; ``tests/test_lm_eval_parity.py`` checks against lm-eval).
A seeded random sample of ``n`` questions is used (files are often sorted by answer or subject;
"the first N" would be biased).
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinitune.data.pack import ChatFormatter, pad_id
from clinitune.errors import DataError
from clinitune.evaluate.registry import EvalContext, LoadedModel, register
from clinitune.progress import track
from clinitune.recipe import McqSpec

LETTERS = "ABCD"


@dataclass(frozen=True)
class Question:
    qid: str
    context: str  # the question as prompted, ending with "Answer:"
    choices: tuple[str, ...]  # continuations, each starting with a space
    answer: int
    description: str = ""  # a header before the few-shot examples (MMLU's subject line)
    group: str = ""  # MMLU's subject: few-shot examples come from the same one, as in lm-eval

    @property
    def prompt(self) -> str:
        return self.description + self.context


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: byte {e.start} is not valid UTF-8") from None


def _mmlu(path: Path) -> list[Question]:
    out = []
    with io.StringIO(_text(path), newline="") as f:
        for i, row in enumerate(csv.reader(f), start=1):
            if len(row) not in (6, 7):
                raise DataError(f"{path}: row {i}: expected 6 or 7 columns, got {len(row)}")
            q, a, b, c, d, ans = row[:6]
            # MMLU's own files: <subject>_test.csv, _dev.csv, _val.csv (no subject column)
            subject = row[6] if len(row) == 7 else re.sub(r"_(test|dev|val)$", "", path.stem)
            if ans.strip() not in tuple(LETTERS):
                raise DataError(f"{path}: row {i}: answer {ans.strip()!r} is not one of A-D")
            subj = subject.replace("_", " ")
            out.append(
                Question(
                    f"{subject}-{i}",
                    f"{q.strip()}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:",
                    tuple(f" {x}" for x in LETTERS),
                    LETTERS.index(ans.strip()),
                    f"The following are multiple choice questions (with answers) about {subj}.\n\n",
                    subject,
                )
            )
    return out


def _pubmedqa(path: Path) -> list[Question]:
    try:
        data = json.loads(_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed by PMID (ori_pqal.json format)")
    labels = ("yes", "no", "maybe")
    out = []
    for pmid, item in data.items():
        if not isinstance(item, dict):
            raise DataError(f"{path}: item {pmid}: expected an object")
        for field in ("QUESTION", "CONTEXTS", "final_decision"):
            if field not in item:
                raise DataError(f"{path}: item {pmid}: missing field {field!r}")
        if item["final_decision"] not in labels:
            raise DataError(f"{path}: item {pmid}: final_decision must be yes/no/maybe")
        if not isinstance(item["CONTEXTS"], list) or not all(
            isinstance(c, str) for c in item["CONTEXTS"]
        ):
            raise DataError(f"{path}: item {pmid}: CONTEXTS must be a list of strings")
        # lm-eval's pubmedqa doc_to_text: contexts joined by newlines
        abstract = "\n".join(item["CONTEXTS"])
        ctx = f"Abstract: {abstract}\nQuestion: {item['QUESTION']}\nAnswer:"
        out.append(
            Question(
                str(pmid), ctx, tuple(f" {x}" for x in labels), labels.index(item["final_decision"])
            )
        )
    return out


def jsonl_objects(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line; a line that is not a JSON object is an
    error naming the file and line."""
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path}: line {i}: invalid JSON") from None
        if not isinstance(d, dict):
            raise DataError(f"{path}: line {i}: expected a JSON object")
        yield i, d


def _medmcqa(path: Path) -> list[Question]:
    out = []
    for i, d in jsonl_objects(path, _text(path)):
        for field in ("question", "opa", "opb", "opc", "opd", "cop"):
            if d.get(field) is None:
                raise DataError(f"{path}: line {i}: missing field {field!r}")
        cop = d["cop"]
        if not isinstance(cop, int) or cop not in (1, 2, 3, 4):
            raise DataError(
                f"{path}: line {i}: cop={cop!r} is not 1-4 (this format is 1-based; the HF "
                "copy is 0-based)"
            )
        opts = "".join(
            f"{LETTERS[j]}. {d[k]}\n" for j, k in enumerate(("opa", "opb", "opc", "opd"))
        )
        ctx = f"Question: {str(d['question']).strip()}\nChoices:\n{opts}Answer:"
        out.append(Question(str(d.get("id", i)), ctx, tuple(f" {x}" for x in LETTERS), cop - 1))
    return out


def _medqa(path: Path) -> list[Question]:
    """MedQA (USMLE) JSONL as released (``data_clean/questions/US/4_options/*.jsonl``):
    ``question``, ``options`` {letter: text}, ``answer_idx`` (a letter), optional ``answer``
    (its text, checked). Prompt as lm-eval's ``medqa_4options``."""
    out = []
    for i, d in jsonl_objects(path, _text(path)):
        for field in ("question", "options", "answer_idx"):
            if d.get(field) in (None, ""):
                raise DataError(f"{path}: line {i}: missing field {field!r}")
        opts = d["options"]
        if (
            not isinstance(opts, dict)
            or len(opts) < 2
            or not all(
                isinstance(k, str) and len(k) == 1 and isinstance(v, str) for k, v in opts.items()
            )
        ):
            raise DataError(f"{path}: line {i}: options must map letters to texts")
        letters = sorted(opts)
        key = str(d["answer_idx"]).strip()
        if key not in opts:
            raise DataError(
                f"{path}: line {i}: answer_idx {key!r} is not one of the options {letters}"
            )
        if "answer" in d and str(d["answer"]).strip() != opts[key].strip():
            raise DataError(f"{path}: line {i}: answer text differs from options[{key!r}]")
        body = "".join(f"{k}. {opts[k]}\n" for k in letters)
        ctx = f"Question: {str(d['question']).strip()}\n{body}Answer:"
        out.append(Question(str(d.get("id", i)), ctx, tuple(f" {k}" for k in letters),
                            letters.index(key)))  # fmt: skip
    return out


LOADERS = {
    "mmlu_csv": _mmlu,
    "pubmedqa_json": _pubmedqa,
    "medmcqa_jsonl": _medmcqa,
    "medqa_jsonl": _medqa,
}


def _load(spec: McqSpec, path: Path) -> list[Question]:
    qs = LOADERS[spec.format](path)
    if not qs:
        raise DataError(f"{path}: no questions")
    return qs


def sample_questions(spec: McqSpec, qs: list[Question], seed: int) -> list[Question]:
    """The seeded random sample of ``spec.n`` questions (all when ``n`` is unset or larger)."""
    if spec.n is not None and spec.n < len(qs):
        return random.Random(f"{seed}:{spec.name}").sample(qs, spec.n)
    return qs


def load_questions(spec: McqSpec, path: Path, seed: int) -> list[Question]:
    return sample_questions(spec, _load(spec, path), seed)


def with_prompts(
    spec: McqSpec,
    qs: list[Question],
    pool: list[Question],
    seed: int,
    fmt: ChatFormatter | None = None,
) -> list[Question]:
    """The questions as scored: description, ``num_fewshot`` solved examples from ``pool``
    (seeded per question, never the question itself, from the question's own subject when it
    has one; "<question> <answer>" blocks separated by blank lines, as lm-eval formats them),
    then the question. With ``fmt`` the whole prompt
    is one user turn of the chat template and the choices lose their leading space."""
    out = []
    for q in qs:
        shots = ""
        if spec.num_fewshot:
            others = [
                x for x in pool if (x.qid != q.qid or x.context != q.context) and x.group == q.group
            ]
            if len(others) < spec.num_fewshot:
                where = f" for subject {q.group!r}" if q.group else ""
                raise DataError(
                    f"{spec.name}: {spec.num_fewshot} few-shot examples asked, "
                    f"{len(others)} available{where}"
                )
            # in file order: with MMLU's 5 dev questions per subject and 5 shots, the prompt is
            # lm-eval's (its first_n sampler on the dev split)
            pick = random.Random(f"{seed}:{spec.name}:{q.qid}").sample(
                range(len(others)), spec.num_fewshot
            )
            ex = [others[i] for i in sorted(pick)]
            shots = "".join(f"{e.context}{e.choices[e.answer]}\n\n" for e in ex)
        prompt = q.description + shots + q.context
        choices = q.choices
        if fmt is not None:
            prompt = fmt.prompt_text({"instruction": prompt, "input": ""})
            choices = tuple(c.removeprefix(" ") for c in q.choices)
        out.append(Question(q.qid, prompt, choices, q.answer, group=q.group))
    return out


def encode_pair(tok: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids the way lm-evaluation-harness makes them (its
    ``_encode_pair``, causal models): trailing spaces of the context move to the continuation,
    the whole string is tokenized and the continuation is what follows the context's tokens.
    Scoring the same ids is what makes clinitune's accuracy equal lm-eval's."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    return ctx, whole[len(ctx) :]


def choice_logprobs(
    model: Any, tok: Any, questions: list[Question], device: str, batch_size: int, desc: str
) -> list[list[float]]:
    """Summed log-probability of each choice continuation given its context (token ids as
    lm-eval makes them: :func:`encode_pair`)."""
    items: list[tuple[list[int], list[list[int]]]] = []
    shared: list[bool] = []  # per question: one item for all choices, or one item per choice
    for q in questions:
        pairs = [encode_pair(tok, q.context, c) for c in q.choices]
        if len({tuple(c) for c, _ in pairs}) == 1:
            items.append((pairs[0][0], [cont for _, cont in pairs]))
            shared.append(True)
        else:  # a choice merged into the context's last token: each choice is its own item
            items += [(c, [cont]) for c, cont in pairs]
            shared.append(False)
    flat = score_continuations(model, items, pad_id(tok), device, batch_size, desc)
    out: list[list[float]] = []
    i = 0
    for q, one in zip(questions, shared, strict=True):
        if one:
            out.append(flat[i])
            i += 1
        else:
            out.append([flat[i + j][0] for j in range(len(q.choices))])
            i += len(q.choices)
    return out


def score_continuations(
    model: Any,
    items: list[tuple[list[int], list[list[int]]]],
    pad: int,
    device: str,
    batch_size: int,
    desc: str,
) -> list[list[float]]:
    """Summed log-probability of each continuation (token ids) after its context (token ids).

    When every continuation of an item is a single token (" A".." D", " yes"/" no"/" maybe")
    one forward pass of the context scores them all; otherwise each continuation is its own
    row. Rows are sorted by length and left-padded with explicit position ids, and only the last
    positions' logits are computed (``logits_to_keep``): with a 49K-token vocabulary the LM head
    otherwise dominates the cost of a small model.
    """
    import torch

    # A row: (item, token ids, continuations scored from it, context_only).
    rows: list[tuple[int, list[int], list[tuple[int, list[int]]], bool]] = []
    for qi, (ctx, conts) in enumerate(items):
        if any(not c for c in conts):
            raise ValueError(f"item {qi}: an empty continuation cannot be scored")
        if all(len(c) == 1 for c in conts):
            rows.append((qi, ctx, list(enumerate(conts)), True))
        else:
            rows += [(qi, ctx + c, [(ci, c)], False) for ci, c in enumerate(conts)]
    out = [[0.0] * len(conts) for _, conts in items]
    rows.sort(key=lambda r: len(r[1]))
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    for batch in track(batches, desc, unit="batch"):
        width = max(len(r[1]) for r in batch)
        ids = torch.tensor([[pad] * (width - len(r[1])) + r[1] for r in batch], device=device)
        mask = torch.tensor(
            [[0] * (width - len(r[1])) + [1] * len(r[1]) for r in batch], device=device
        )
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        # Scored positions: the last len(cont) tokens of a multi-token row, or the last
        # position of a context-only row (it predicts the single-token choices).
        keep = max(1 if r[3] else len(r[2][0][1]) for r in batch)
        with torch.inference_mode():
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                logits_to_keep=keep + 1,
                use_cache=False,
            ).logits.float()
        logp = torch.log_softmax(logits, -1)  # [B, keep+1, V]; last index = last token
        for b, (qi, _, conts, context_only) in enumerate(batch):
            if not context_only:
                ci, c = conts[0]
                n = len(c)
                # logits at index t predict token t+1: the continuation's n tokens are predicted
                # by the n positions before the last one (index -n-1 .. -2).
                preds = logp[b, -n - 1 : -1]
                out[qi][ci] = float(preds.gather(1, torch.tensor(c, device=device)[:, None]).sum())
            else:
                last = logp[b, -1]
                for ci, c in conts:
                    out[qi][ci] = float(last[c[0]])
    return out


@register("mcq")
def mcq(ctx: EvalContext, m: LoadedModel) -> dict[str, Any]:
    recipe = ctx.recipe
    results: dict[str, Any] = {}
    for spec in recipe.evaluate.mcq:
        path = recipe.resolve_path(spec.path)
        full = _load(spec, path)
        qs = sample_questions(spec, full, recipe.seed)
        sampled = len(qs) < len(full)
        pool = _load(spec, recipe.resolve_path(spec.fewshot_path)) if spec.fewshot_path else None
        fmt = None
        if spec.chat_template:
            fmt = ChatFormatter(
                m.tokenizer, recipe.model.system_prompt, recipe.model.chat_template_kwargs
            )
        qs = with_prompts(spec, qs, pool or full, recipe.seed, fmt)
        lps = choice_logprobs(
            m.model, m.tokenizer, qs, ctx.device, spec.batch_size, f"{spec.name} [{m.label}]"
        )
        correct, correct_norm, per = 0, 0, []
        for q, lp in zip(qs, lps, strict=True):
            pred = max(range(len(lp)), key=lambda j: lp[j])
            # lm-eval's acc_norm: per character of the choice text (without the " " delimiter)
            norm = [x / len(c.removeprefix(" ")) for x, c in zip(lp, q.choices, strict=True)]
            pred_n = max(range(len(norm)), key=lambda j: norm[j])
            correct += pred == q.answer
            correct_norm += pred_n == q.answer
            per.append(
                {
                    "qid": q.qid,
                    "pred": pred,
                    "answer": q.answer,
                    "correct": pred == q.answer,
                    "correct_norm": pred_n == q.answer,
                }
            )
        chance = sum(1 / len(q.choices) for q in qs) / len(qs)
        by_subject: dict[str, dict[str, Any]] = {}
        for q, e in zip(qs, per, strict=True):
            if q.group:
                b = by_subject.setdefault(q.group, {"correct": 0, "n": 0})
                b["correct"] += e["correct"]
                b["n"] += 1
        subjects = {
            g: {"acc": b["correct"] / b["n"], "n": b["n"]} for g, b in sorted(by_subject.items())
        }
        results[spec.name] = {
            "acc": correct / len(qs),
            "acc_norm": correct_norm / len(qs),
            "n": len(qs),
            "chance": chance,
            "format": spec.format,
            "num_fewshot": spec.num_fewshot,
            "chat_template": spec.chat_template,
            "sampled": sampled,
            **({"by_subject": subjects} if len(subjects) > 1 else {}),
            "per_example": per,
        }
    return results
