"""``diagnosis``: presentation sections -> the assigned diagnosis (description and/or
ICD-10-CM code), for the assigned-diagnosis prediction task of Weissenbacher et al."""

from __future__ import annotations

import re

from clinitune.data.ingest import Note
from clinitune.data.tasks import BuildResult, provenance, register
from clinitune.data.tasks.mdm import title
from clinitune.recipe import DiagnosisTask

# ICD-10-CM shape: letter, digit, alphanumeric, then optionally a dot and 1-4 alphanumerics
# (I46.9, S72.001A, E11.65). Codes without the dot (I469) are normalized to the dotted form.
_ICD10CM = re.compile(r"^([A-TV-Z][0-9][0-9A-Z])\.?([0-9A-Z]{1,4})?$")


def normalize_icd10cm(code: str) -> str | None:
    m = _ICD10CM.match(code.strip().upper())
    if not m:
        return None
    return m.group(1) + (f".{m.group(2)}" if m.group(2) else "")


@register("diagnosis")
def build_diagnosis(note: Note, task: str, spec: DiagnosisTask) -> BuildResult:
    label = note.meta.get(spec.label_field, "").strip() if spec.label_field else ""
    raw_code = note.meta.get(spec.code_field, "").strip() if spec.code_field else ""
    code = normalize_icd10cm(raw_code) if raw_code else None
    if raw_code and code is None:
        return "invalid_icd10cm_code"
    if not label and not code:
        return "missing_label"
    secs = note.sections
    inputs = [f"{title(s)}:\n{secs[s]}" for s in spec.inputs if secs.get(s, "").strip()]
    if not inputs:
        return "missing_inputs"
    answer = "; ".join(x for x in (label, f"ICD-10-CM {code}" if code else "") if x)
    return [
        {
            **provenance(note, task),
            "kind": "chat",
            "instruction": spec.instruction,
            "input": "\n\n".join(inputs),
            "completion": answer,
            "label": label,
            "code": code,
        }
    ]
