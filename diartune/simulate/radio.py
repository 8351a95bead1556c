"""A narrow-band radio channel: how a dispatcher sounds in the cab of an ambulance.

Everything is numpy and scipy, with no random numbers of its own (the caller draws the
squelch noise), so the same input gives the same samples.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, resample_poly, sosfilt

from diartune.simulate.options import Radio
from diartune.simulate.sources import SAMPLE_RATE

RADIO_RATE = 8000
_MU = 255.0  # G.711 mu-law


def mu_law(signal: np.ndarray) -> np.ndarray:
    """``signal`` (in [-1, 1]) coded with G.711 mu-law to 8 bits, then decoded."""
    clipped = np.clip(signal, -1.0, 1.0)
    companded = np.sign(clipped) * np.log1p(_MU * np.abs(clipped)) / np.log1p(_MU)
    code = np.round(companded * 127) / 127  # 255 levels: sign and 7 bits of magnitude
    return np.sign(code) * np.expm1(np.abs(code) * np.log1p(_MU)) / _MU


def _band_pass(signal: np.ndarray, band_hz: tuple[float, float], rate: int) -> np.ndarray:
    sos = butter(4, list(band_hz), btype="bandpass", fs=rate, output="sos")
    return np.asarray(sosfilt(sos, signal))


def transmit(speech: np.ndarray, squelch: np.ndarray, options: Radio) -> np.ndarray:
    """A radio turn at 16 kHz: ``speech`` then its ``squelch`` tail, through the radio.

    The transmitter band-passes and lightly clips (``clip_db`` below the speech's
    peak); the channel is 8 kHz G.711 mu-law; the receiver band-passes again. The
    result is scaled so that its speech part keeps the RMS of ``speech``.

    Parameters
    ----------
    speech
        The turn's samples, already at their level in the mix.
    squelch
        Noise heard after the turn (its length is the tail's), already at its level.
    options
        The radio's pass band and clipping.
    """
    sent = _band_pass(np.concatenate([speech, squelch]), options.band_hz, SAMPLE_RATE)
    ceiling = 10 ** (-options.clip_db / 20) * np.abs(sent[: len(speech)]).max()
    sent = np.clip(sent, -ceiling, ceiling)
    coded = mu_law(resample_poly(sent, RADIO_RATE, SAMPLE_RATE))
    received = resample_poly(coded, SAMPLE_RATE, RADIO_RATE)[: len(sent)]
    received = _band_pass(received, options.band_hz, SAMPLE_RATE)
    rms = np.sqrt(np.mean(np.square(received[: len(speech)]))) + 1e-12
    return received * np.sqrt(np.mean(np.square(speech))) / rms
