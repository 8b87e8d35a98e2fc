"""Segment terminology: what a label *is*, in codes that 3D Slicer and DICOM understand.

A label's optional `terminology` entry in a set's manifest is a JSON object:

    {"category": {"scheme": "SCT", "code": "49755003", "meaning": "Morphologically Altered Structure"},
     "type":     {"scheme": "SCT", "code": "6574001",  "meaning": "Necrosis"},
     "modifier": {...},          # optional: type modifier, e.g. SCT 24028007 "Right"
     "region":   {...},          # optional: anatomic region, e.g. SCT 12738006 "Brain"
     "region_modifier": {...},   # optional: modifier of the region
     "context":  "...",          # optional: terminology context name (default DEFAULT_CONTEXT)
     "region_context": "..."}    # optional: anatomic context name (default DEFAULT_REGION_CONTEXT)

Each code is `{"scheme", "code", "meaning"}` (DICOM's coding scheme designator, code value
and code meaning). Category and type are both required, as in DICOM SEG and Slicer: a bare
code does not say which category it belongs to, so the older flat form
`{"scheme", "code", "meaning"}` is refused with a message saying how to write it.

`slicer_terminology(entry)` gives the string Slicer stores with a segment
(`vtkSegment::SetTerminology`, the `TerminologyEntry` tag of a `.seg.nrrd` segment). Its format
is that of `vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry` (Slicer 5.x), seven
`~`-separated fields, each code written `scheme^code^meaning` and an absent one `^^`:

    context~category~type~modifier~region_context~region~region_modifier
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import MedTuningError

# Slicer's own default contexts (the names its Terminologies module loads at start-up).
DEFAULT_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
DEFAULT_REGION_CONTEXT = "Anatomic codes - DICOM master list"
CODE_KEYS = ("scheme", "code", "meaning")
CODE_FIELDS = ("category", "type", "modifier", "region", "region_modifier")
NAME_FIELDS = ("context", "region_context")
# `~` and `^` separate the serialized fields, `|` separates a .seg.nrrd segment's tags and a
# line break would end the NRRD header field: none may appear inside a code or a name.
FORBIDDEN = set("~^|\r\n")


class TerminologyError(MedTuningError):
    """A terminology entry is not a valid category + type description."""


def _check_text(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TerminologyError(f"{where} must be a non-empty string, got {value!r}")
    bad = sorted(FORBIDDEN & set(value))
    if bad:
        raise TerminologyError(f"{where} {value!r} contains {', '.join(map(repr, bad))}: Slicer uses it as a separator")
    return value


def _check_code(where: str, code: Any) -> None:
    if not isinstance(code, Mapping):
        raise TerminologyError(f"{where} must be an object {{scheme, code, meaning}}, got {type(code).__name__}")
    missing = [k for k in CODE_KEYS if k not in code]
    extra = sorted(set(code) - set(CODE_KEYS))
    if missing or extra:
        raise TerminologyError(f"{where} must have exactly scheme, code and meaning"
                               f"{'; missing ' + ', '.join(missing) if missing else ''}"
                               f"{'; unknown ' + ', '.join(extra) if extra else ''}")
    for key in CODE_KEYS:
        _check_text(f"{where}.{key}", code[key])


def validate_terminology(entry: Any) -> None:
    """Raise TerminologyError saying what is wrong with a manifest's terminology entry."""
    if not isinstance(entry, Mapping):
        raise TerminologyError(f"must be an object with category and type, got {type(entry).__name__}")
    if set(entry) <= set(CODE_KEYS) and entry:
        # The flat form names one code without its category: guessing one (e.g. "Morphologically
        # Altered Structure") would be wrong for organs and tissues, so ask for both.
        raise TerminologyError(
            'a bare {"scheme", "code", "meaning"} does not say its category; write '
            '{"category": {...}, "type": {...}}, e.g. category SCT 123037004 "Anatomical Structure" '
            'for organs and tissues or SCT 49755003 "Morphologically Altered Structure" for lesions')
    unknown = sorted(set(entry) - set(CODE_FIELDS) - set(NAME_FIELDS))
    if unknown:
        raise TerminologyError(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(CODE_FIELDS + NAME_FIELDS)}")
    for key in ("category", "type"):
        if key not in entry:
            raise TerminologyError(f"missing {key} (both category and type are required)")
    for key in CODE_FIELDS:
        if key in entry:
            _check_code(key, entry[key])
    for key in NAME_FIELDS:
        if key in entry:
            _check_text(key, entry[key])
    if "region_modifier" in entry and "region" not in entry:
        raise TerminologyError("region_modifier needs a region")


def _code(entry: Mapping[str, Any], key: str) -> str:
    code = entry.get(key)
    return "^".join(code[k] for k in CODE_KEYS) if code else "^^"


def slicer_terminology(entry: Mapping[str, Any]) -> str:
    """The Slicer terminology string of a manifest's terminology entry (validated first)."""
    validate_terminology(entry)
    return "~".join([
        entry.get("context", DEFAULT_CONTEXT), _code(entry, "category"), _code(entry, "type"),
        _code(entry, "modifier"), entry.get("region_context", DEFAULT_REGION_CONTEXT),
        _code(entry, "region"), _code(entry, "region_modifier"),
    ])
