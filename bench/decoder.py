"""Audio decoding where torchcodec cannot run (a bare GPU image has no FFmpeg).

A process installs it with ``ensure_decoder()``; a benchmark whose trials run as
processes of their own (``fidelity.py``) installs it in each through a ``sitecustomize``
module on the device machine (BENCHMARKS.md shows the command).
"""

from __future__ import annotations

import argparse
from typing import Any


def ensure_decoder() -> str:
    """Which decoder pyannote reads files with. pyannote 4 decodes with torchcodec, which
    needs FFmpeg's libraries; where they are missing (a bare GPU image), WAV and FLAC files
    are read with soundfile instead, through the same ``AudioDecoder`` interface."""
    from pyannote.audio.core import io

    import diartune.trial  # noqa: F401  (turns pyannote's telemetry off before it loads)

    if io.TORCHCODEC_AVAILABLE:
        return "torchcodec"
    io.AudioDecoder = _SoundfileDecoder
    io.TORCHCODEC_AVAILABLE = True
    return "soundfile (bench shim: torchcodec could not load FFmpeg)"


class _SoundfileDecoder:
    """The part of torchcodec's ``AudioDecoder`` that pyannote.audio.core.io uses."""

    class _Samples:
        def __init__(self, data: Any, sample_rate: int) -> None:
            self.data, self.sample_rate = data, sample_rate

    def __init__(self, path: Any) -> None:
        import soundfile

        self.path = path
        info = soundfile.info(path)
        self.metadata = argparse.Namespace(
            sample_rate=info.samplerate,
            num_channels=info.channels,
            duration_seconds_from_header=info.frames / info.samplerate,
        )

    def _read(self, start: int = 0, stop: int | None = None) -> _Samples:
        import soundfile
        import torch

        data, rate = soundfile.read(
            self.path, start=start, stop=stop, dtype="float32", always_2d=True
        )
        return self._Samples(torch.from_numpy(data.T.copy()), rate)

    def get_all_samples(self) -> _Samples:
        return self._read()

    def get_samples_played_in_range(self, start: float, end: float) -> _Samples:
        rate = self.metadata.sample_rate
        return self._read(round(start * rate), round(end * rate))
