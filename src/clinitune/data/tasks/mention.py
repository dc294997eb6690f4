"""``mention``: note -> "yes"/"no" -- does the note mention X (e.g. in-hospital cardiac arrest)?

With ``label_field`` the label is read from the data. Otherwise it is a *weak* label from the
recipe's patterns, with a small NegEx-style check (Chapman et al. 2001): a match is discarded
when a negation or hypothetical cue occurs within ``negation_window`` words before it in the
same sentence. Written here because it is ~40 lines and negspacy/medspacy need spaCy pipelines
that do not run offline as installed; the cue lists are the one place to extend.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import lru_cache

from clinitune.data.ingest import Note
from clinitune.data.tasks import BuildResult, provenance, register
from clinitune.recipe import MentionTask

NEGATION_CUES = (
    "no",
    "not",
    "denies",
    "denied",
    "without",
    "negative for",
    "no evidence of",
    "never",
    "free of",
    "absence of",
    "ruled out",
    "rules out",
    "resolved",
)
HYPOTHETICAL_CUES = (
    "risk of",
    "risk for",
    "at risk",
    "rule out",
    "r/o",
    "if",
    "in case of",
    "should",
    "concern for",
    "family history of",
    "fh of",
    "prevent",
    "prevention of",
    "discussed",
    "code status",
    "dnr",
    "dnar",
    "would",
)
_YES = {"yes", "y", "1", "true", "t", "positive", "pos"}
_NO = {"no", "n", "0", "false", "f", "negative", "neg"}
_SENTENCE_END = re.compile(r"[.!?;\n]")


@lru_cache(maxsize=64)
def _compile(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    out = []
    for p in patterns:
        flags = 0 if p.isupper() else re.IGNORECASE  # acronyms: ROSC, CPR, PEA (not "pea")
        out.append(re.compile(rf"(?<![\w/-]){re.escape(p)}(?![\w-])", flags))
    return out


@lru_cache(maxsize=4)
def _cue_regex(cues: tuple[str, ...]) -> re.Pattern[str]:
    alts = "|".join(re.escape(c) for c in sorted(cues, key=len, reverse=True))
    return re.compile(rf"(?<![\w/])(?:{alts})(?![\w])", re.IGNORECASE)


def affirmed_mentions(text: str, patterns: tuple[str, ...], window: int) -> int:
    """Number of pattern matches that are neither negated nor hypothetical."""
    neg = _cue_regex(NEGATION_CUES)
    hyp = _cue_regex(HYPOTHETICAL_CUES)
    # Sentence boundaries once per note; each match finds its sentence start by bisection
    # (rescanning the note from the top for every match is quadratic on long notes).
    ends = [e.end() for e in _SENTENCE_END.finditer(text)]
    count = 0
    for rx in _compile(patterns):
        for m in rx.finditer(text):
            k = bisect_right(ends, m.start())
            start = ends[k - 1] if k else 0
            before = text[start : m.start()].split()[-window:]
            context = " ".join(before)
            if neg.search(context) or hyp.search(context):
                continue
            count += 1
    return count


@register("mention")
def build_mention(note: Note, task: str, spec: MentionTask) -> BuildResult:
    if spec.label_field:
        raw = note.meta.get(spec.label_field, "").strip().lower()
        if raw in _YES:
            label = "yes"
        elif raw in _NO:
            label = "no"
        else:
            return "missing_label" if not raw else "unrecognized_label"
        source = "column"
    else:
        label = (
            "yes"
            if affirmed_mentions(note.text, tuple(spec.patterns), spec.negation_window)
            else "no"
        )
        source = "weak"
    return [
        {
            **provenance(note, task),
            "kind": "chat",
            "instruction": f"{spec.question} Answer yes or no.",
            "input": note.text.strip(),
            "completion": label,
            "label": label,
            "label_source": source,
        }
    ]
