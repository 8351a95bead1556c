"""The DiarizationTuning spec: its one typed model, parameters, file format and changes."""
