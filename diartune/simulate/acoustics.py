"""Synthetic acoustics of emergency scenes: background noises and room reverberation.

Each noise is made at unit RMS; the caller mixes them and sets the signal-to-noise ratio.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import butter, sosfilt

from diartune.simulate.options import NoiseKind
from diartune.simulate.sources import SAMPLE_RATE


def _unit_rms(signal: np.ndarray) -> np.ndarray:
    return signal / (np.sqrt(np.mean(np.square(signal))) + 1e-12)


def _filtered(noise: np.ndarray, kind: str, cutoff: float | list[float]) -> np.ndarray:
    sos = butter(4, cutoff, btype=kind, fs=SAMPLE_RATE, output="sos")
    return np.asarray(sosfilt(sos, noise))


def engine(samples: int, rng: np.random.Generator) -> np.ndarray:
    """Engine rumble: low-passed noise plus the engine's firing tone and harmonics.

    The firing frequency (25-60 Hz) drifts slowly, as an idling or driving engine does.
    """
    t = np.arange(samples) / SAMPLE_RATE
    rumble = _filtered(rng.normal(size=samples), "lowpass", 250.0)
    base = rng.uniform(25.0, 60.0)
    frequency = base * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t))
    phase = 2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE
    tone = np.sum([np.sin(harmonic * phase) / harmonic for harmonic in (1, 2, 3, 4)], axis=0)
    return _unit_rms(_unit_rms(rumble) + 0.7 * _unit_rms(tone))


def siren(samples: int, rng: np.random.Generator) -> np.ndarray:
    """A siren sweep: a wail (one sweep in 3-8 s) or a yelp (2-4 sweeps a second).

    The tone sweeps around 700-1600 Hz and carries odd harmonics, like a horn driver.
    """
    t = np.arange(samples) / SAMPLE_RATE
    rate = rng.uniform(0.12, 0.33) if rng.random() < 0.5 else rng.uniform(2.0, 4.0)
    low, high = rng.uniform(600.0, 800.0), rng.uniform(1300.0, 1600.0)
    frequency = low + (high - low) * 0.5 * (1 - np.cos(2 * np.pi * rate * t))
    phase = 2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
    return _unit_rms(np.sum([np.sin(odd * phase) / odd for odd in (1, 3, 5)], axis=0))


def squelch(samples: int, rng: np.random.Generator) -> np.ndarray:
    """Radio squelch: bursts of band-limited hiss (0.1-0.5 s), about one every 5 s.

    The bursts switch on and off abruptly, as a radio opening and closing its squelch.
    """
    hiss = _filtered(rng.normal(size=samples), "bandpass", [300.0, 3400.0])
    gate = np.zeros(samples)
    for _ in range(max(1, int(rng.poisson(samples / SAMPLE_RATE / 5)))):
        start = int(rng.integers(samples))
        gate[start : start + int(rng.uniform(0.1, 0.5) * SAMPLE_RATE)] = 1.0
    return _unit_rms(hiss * gate)


NOISES: dict[NoiseKind, Callable[[int, np.random.Generator], np.ndarray]] = {
    "engine": engine,
    "siren": siren,
    "squelch": squelch,
}


def room_impulse_response(rt60: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response with a unit direct path at sample 0.

    After 2.5 ms of silence comes a tail of Gaussian noise that decays by 60 dB in
    ``rt60`` seconds (Polack's model), scaled so that the direct path's energy is
    ``drr_db`` above the tail's. The dry signal stays in place, so references hold.
    """
    length = int(rt60 * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    tail = rng.normal(size=length) * 10 ** (-3 * t / rt60)
    tail[: int(0.0025 * SAMPLE_RATE)] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(np.square(tail)))
    tail[0] = 1.0
    return tail
