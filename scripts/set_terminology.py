"""Give the shipped sets' labels their standard codes (category + type, as Slicer and DICOM SEG
use them) and re-save the set with `edit_manifest.edit_set` (tensors bit-identical).

    python scripts/set_terminology.py brats-glioma [FILE]   # default: Resources/AdapterSets/NAME.safetensors

Sources of the codes:
- brats-glioma: DICOM PS3.16 CID 7168 "Brain Lesion Segmentation Type With Necrosis" (which
  includes CID 7169), the DICOM list made for exactly these BraTS sub-regions. Necrosis
  (SCT 6574001) and Edema (SCT 79654002) are SNOMED CT and are listed under "Morphologically
  Altered Structure" (SCT 49755003) in Slicer's SegmentationCategoryTypeModifier-DICOM-Master.json.
  SNOMED CT has no concept for enhancing / non-enhancing tumour: CID 7169 uses NCI Thesaurus
  codes, NCIt C113842 "Enhancing Lesion" and NCIt C81175 "Non-Enhancing Lesion", used here.
  Region: SCT 12738006 "Brain" (CID 7153).
- brain-tissue: DICOM PS3.16 CID 7153 "CNS Segmentation Type": SCT 389081007 "Gray Matter" and
  SCT 389080008 "White Matter" (SNOMED CT: "Gray matter structure of central nervous system",
  "White matter structure of brain and spinal cord"), category SCT 123037004 "Anatomical
  Structure". The template's grey-matter map covers cortical, deep and cerebellar grey matter,
  hence the general concepts, not "Cerebral cortex" or "Cerebral white matter".
Slicer's own lists were checked for the category codes and for Necrosis and Edema; the others
come from the DICOM tables and may not appear in Slicer's pick lists (Slicer still shows them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edit_manifest import ROOT, edit_set  # noqa: E402

DICOM = "Segmentation category and type - DICOM master list"
LESION = {"scheme": "SCT", "code": "49755003", "meaning": "Morphologically Altered Structure"}
ANATOMY = {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"}
BRAIN = {"scheme": "SCT", "code": "12738006", "meaning": "Brain"}


def lesion(scheme: str, code: str, meaning: str) -> dict[str, Any]:
    return {"context": DICOM, "category": LESION, "type": {"scheme": scheme, "code": code, "meaning": meaning},
            "region": BRAIN}


def anatomy(code: str, meaning: str) -> dict[str, Any]:
    return {"context": DICOM, "category": ANATOMY, "type": {"scheme": "SCT", "code": code, "meaning": meaning}}


TERMINOLOGY: dict[str, dict[str, dict[str, Any]]] = {
    "brats-glioma": {
        "necrosis": lesion("SCT", "6574001", "Necrosis"),
        "edema": lesion("SCT", "79654002", "Edema"),
        "non-enhancing": lesion("NCIt", "C81175", "Non-Enhancing Lesion"),
        "enhancing": lesion("NCIt", "C113842", "Enhancing Lesion"),
    },
    "brain-tissue": {
        "grey-matter": anatomy("389081007", "Gray Matter"),
        "white-matter": anatomy("389080008", "White Matter"),
    },
}


def apply_terminology(name: str, path: Path) -> None:
    table = TERMINOLOGY[name]

    def change(manifest: dict[str, Any]) -> None:
        labels = manifest["task"]["labels"]
        if {label["name"] for label in labels} != set(table):
            raise SystemExit(f"{path}: labels {[lb['name'] for lb in labels]} do not match the table {list(table)}")
        for label in labels:
            label["terminology"] = table[label["name"]]

    edit_set(path, change)
    print(f"{path}: terminology set for {', '.join(table)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(TERMINOLOGY))
    parser.add_argument("file", type=Path, nargs="?", help="default: Resources/AdapterSets/NAME.safetensors")
    args = parser.parse_args()
    apply_terminology(args.name, args.file or ROOT / "Resources" / "AdapterSets" / f"{args.name}.safetensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
