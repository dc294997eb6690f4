"""Evaluations register themselves here; the suite runs every enabled one per model.

An evaluation is a function ``(ctx: EvalContext, model: LoadedModel) -> dict`` returning a
JSON-able dict of metrics (and, optionally, per-example values under ``"per_example"``, which
the suite stores separately for paired comparisons). To add one: a new file in this package
with ``@register("name")`` and an import line in ``suite.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinitune.recipe import Recipe
from clinitune.run import RunLayout


@dataclass
class EvalContext:
    recipe: Recipe
    layout: RunLayout
    device: str


@dataclass
class LoadedModel:
    label: str
    path: Path
    model: Any  # transformers PreTrainedModel (None for evaluations that need no weights)
    tokenizer: Any


Evaluation = Callable[[EvalContext, LoadedModel], dict[str, Any]]
EVALUATIONS: dict[str, tuple[Evaluation, bool]] = {}


def register(name: str, needs_model: bool = True) -> Callable[[Evaluation], Evaluation]:
    def deco(fn: Evaluation) -> Evaluation:
        EVALUATIONS[name] = (fn, needs_model)
        return fn

    return deco
