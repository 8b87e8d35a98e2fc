"""Reading and writing files: volumes, Slicer segmentations, tensor files; all writes atomic."""
