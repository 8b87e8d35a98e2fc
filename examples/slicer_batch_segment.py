"""Segment a folder of cases with the MedTuningSegment module logic, headless in Slicer.

    Slicer --no-main-window --python-script examples/slicer_batch_segment.py \
        -- --set brats-glioma --input cases/ --output results/ [--channels _0000,_0001]

Each case is CASE_0000.nii.gz, CASE_0001.nii.gz, ... (one file per channel, in the set's
order; single-channel sets also accept plain CASE.nii.gz). Results are CASE.seg.nrrd with the
set's segment names and colours. The module widget is not needed; the logic does the work.
"""

import argparse
import sys
from pathlib import Path

import slicer
from MedTuningSegmentLib import mrml_io

from MedTuningSegment import MedTuningSegmentLogic


def main(argv):
    parser = argparse.ArgumentParser(description="Segment a folder of cases with a MedTuning adapter set")
    parser.add_argument("--set", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    logic = MedTuningSegmentLogic()
    channels = len(logic.channelNames(args.set))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    cases = {}
    for path in sorted(Path(args.input).glob("*.nii*")):
        stem = path.name.split(".")[0]
        case, _, index = stem.rpartition("_")
        key = case if index.isdigit() and len(index) == 4 else stem
        cases.setdefault(key, []).append(path)
    failures = 0
    for case, paths in cases.items():
        if len(paths) != channels:
            print(f"{case}: {len(paths)} file(s), the set needs {channels}; skipped", file=sys.stderr)
            failures += 1
            continue
        slicer.mrmlScene.Clear()
        # Slicer's own volume reader; unlike slicer.util.loadVolume it needs no application,
        # so the same script runs under PythonSlicer and with the slicer-core wheel
        volumes = [mrml_io.load_volume(p, slicer.mrmlScene) for p in sorted(paths)]
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", case)
        try:
            logic.segment(volumes, args.set, segmentation, args.device)
            mrml_io.save_seg_nrrd(segmentation, out / f"{case}.seg.nrrd")
            print(f"{case}: done")
        except Exception as error:  # report and go on with the next case
            print(f"{case}: failed: {error}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.exit(code)
