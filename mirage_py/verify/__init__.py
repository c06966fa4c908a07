"""The finite-field verifier: fields, the finite-field executor, fingerprints, equivalence
with a stated error bound, and float numerics (DESIGN.md, "Verification")."""

from .equivalence import DEFAULT_TRIALS, Verdict, equivalent
from .ffexec import FFInterpreter, FieldOps, OutsideFragment
from .fields import DEFAULT_FIELD, FIELDS, Field
from .fingerprint import Fingerprint, fingerprint
from .numerics import NumericsReport, numerics

__all__ = [
    "DEFAULT_FIELD",
    "DEFAULT_TRIALS",
    "FIELDS",
    "FFInterpreter",
    "Field",
    "FieldOps",
    "Fingerprint",
    "NumericsReport",
    "OutsideFragment",
    "Verdict",
    "equivalent",
    "fingerprint",
    "numerics",
]
