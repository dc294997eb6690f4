"""``mdm``: patient presentation sections -> medical decision making / assessment & plan.

The Weissenbacher et al. set-up: the prompt is the chosen presentation sections of a note (chief
complaint, HPI, ROS, exam, results, ED course...) with their canonical headers; the completion is
the first target group present (MDM, else assessment & plan, else assessment + plan).
"""

from __future__ import annotations

from clinitune.data.ingest import Note
from clinitune.data.tasks import BuildResult, provenance, register
from clinitune.recipe import MdmTask

SECTION_TITLES = {
    "chief_complaint": "Chief complaint",
    "hpi": "History of present illness",
    "ros": "Review of systems",
    "physical_exam": "Physical exam",
    "vitals": "Vitals",
    "results": "Results",
    "imaging": "Imaging",
    "ed_course": "ED course",
}


def title(name: str) -> str:
    return SECTION_TITLES.get(name, name.replace("_", " ").capitalize())


@register("mdm")
def build_mdm(note: Note, task: str, spec: MdmTask) -> BuildResult:
    secs = note.sections
    if not secs:
        return "no_sections"
    completion = None
    for group in spec.targets:
        parts = [secs[s] for s in group if secs.get(s, "").strip()]
        if parts:
            completion = "\n\n".join(parts)
            break
    if completion is None:
        return "missing_target"
    if len(completion) < spec.min_target_chars:
        return "target_too_short"
    inputs = [f"{title(s)}:\n{secs[s]}" for s in spec.inputs if secs.get(s, "").strip()]
    if not inputs:
        return "missing_inputs"
    return [
        {
            **provenance(note, task),
            "kind": "chat",
            "instruction": spec.instruction,
            "input": "\n\n".join(inputs),
            "completion": completion,
        }
    ]
