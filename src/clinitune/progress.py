"""The one progress helper: every long loop in clinitune goes through ``track``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("CLINITUNE_PROGRESS", "1") != "0"


def _options(desc: str, total: int | None, unit: str) -> dict[str, object]:
    return {
        "desc": desc,
        "total": total,
        "unit": unit,
        "disable": not enabled(),
        "mininterval": 0.5,
        "dynamic_ncols": True,
        "leave": False,
    }


def track(it: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap an iterable in a progress bar (to stderr; off with CLINITUNE_PROGRESS=0).
    ``desc`` must never contain note text."""
    yield from tqdm(it, **_options(desc, total, unit))


def bar(desc: str, total: int | None = None, unit: str = "it") -> tqdm:
    """A manually updated progress bar with the same settings as ``track``."""
    return tqdm(**_options(desc, total, unit))
