"""Negation scope for the lexical concept metrics (the rubric's concepts and concept F1).

NegEx-style (Chapman et al., 2001), on a plain token list: a single-word negation cue ("no",
"denies", "without", ...) negates the next :data:`SCOPE` tokens; the scope ends early at sentence
punctuation or at a termination term ("but", "however", ...). "and" does not end it, so every
item of "denies fever, chills and night sweats" up to the window is negated, as in NegEx.

Written here rather than taken from negspacy / medspaCy's ConText because those run on spaCy
``Doc`` objects with their own tokenizer, while both metrics work on their own token lists and
need a few microseconds per note; one definition keeps the two metrics agreeing on what is
negated. (The ``mention`` task's weak labels use phrase cues and hypotheticals instead:
``clinitune.data.tasks.mention``.)
"""

from __future__ import annotations

from collections.abc import Sequence

CUES = frozenset(
    [
        "no",
        "not",
        "denies",
        "denied",
        "deny",
        "without",
        "negative",
        "nor",
        "never",
        "none",
        "absent",
        "free",
    ]
)
TERMINATORS = frozenset({"but", "however", "although", "though", "except", "which", "who"})
PUNCT = frozenset({".", ";", ":", "!", "?", "\n"})
SCOPE = 5  # tokens a cue covers


def negated(tokens: Sequence[str]) -> list[bool]:
    """Whether each token lies in a negation scope (cues and terminators themselves never do).
    Tokens are compared lower-cased; punctuation tokens are single characters of :data:`PUNCT`."""
    out = [False] * len(tokens)
    left = 0
    for i, tok in enumerate(tokens):
        t = tok.lower()
        if t in PUNCT or t in TERMINATORS:
            left = 0
        elif t in CUES:
            left = SCOPE
        elif left:
            out[i] = True
            left -= 1
    return out
