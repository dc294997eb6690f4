"""``soap``: doctor-patient dialogue -> clinical note (HEAL's task), or one section of it
(MTS-Dialog, when ``section_field`` names the meta field holding the section label)."""

from __future__ import annotations

from clinitune.data.ingest import Note
from clinitune.data.tasks import BuildResult, provenance, register
from clinitune.recipe import SoapTask

# MTS-Dialog's 20 normalized section labels -> readable names for the prompt.
MTS_SECTION_NAMES = {
    "FAM/SOCHX": "family and social history",
    "GENHX": "history of present illness",
    "PASTMEDICALHX": "past medical history",
    "CC": "chief complaint",
    "PASTSURGICAL": "past surgical history",
    "ALLERGY": "allergies",
    "ROS": "review of systems",
    "MEDICATIONS": "medications",
    "ASSESSMENT": "assessment",
    "EXAM": "physical exam",
    "DIAGNOSIS": "diagnosis",
    "DISPOSITION": "disposition",
    "PLAN": "plan",
    "EDCOURSE": "emergency department course",
    "IMMUNIZATIONS": "immunizations",
    "IMAGING": "imaging",
    "GYNHX": "gynecologic history",
    "PROCEDURES": "procedures",
    "OTHER_HISTORY": "other history",
    "LABS": "labs",
}


@register("soap")
def build_soap(note: Note, task: str, spec: SoapTask) -> BuildResult:
    if not (note.dialogue or "").strip():
        return "missing_dialogue"
    instruction = spec.instruction
    if spec.section_field:
        label = note.meta.get(spec.section_field, "").strip()
        if not label:
            return "missing_section_label"
        section = MTS_SECTION_NAMES.get(label.upper(), label.lower())
        instruction = spec.section_instruction.format(section=section)
    return [
        {
            **provenance(note, task),
            "kind": "chat",
            "instruction": instruction,
            "input": note.dialogue.strip(),
            "completion": note.text.strip(),
        }
    ]
