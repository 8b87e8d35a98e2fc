"""Adapter sets: the file format and manifest, the library, backbones, loading, shipped sets."""
