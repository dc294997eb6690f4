"""Patient-level splits with a deterministic hash: no patient is ever in two splits.

The split of a patient depends only on (salt, patient id) -- not on row order, file order or
which other patients exist -- so adding notes never moves an existing patient across splits.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "valid", "test")


def hash_unit(key: str, salt: str) -> float:
    """Map a key to [0, 1) uniformly and deterministically."""
    h = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign_split(patient_id: str, *, valid: float, test: float, salt: str) -> str:
    u = hash_unit(patient_id, salt)
    if u < test:
        return "test"
    if u < test + valid:
        return "valid"
    return "train"
