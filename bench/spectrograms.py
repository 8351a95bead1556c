"""Spectrograms of one simulated file of each ``diartune simulate`` preset, for docs/simulate.md.

Simulates a few conversations of the demo's sources (ami-debug train and speech-pool)
with ``--preset source`` and ``--preset ems`` (seed 0), takes the first file of
``source`` and, of the ``ems`` files with a radio speaker, the one with the fewest
noise kinds and then the highest SNR (so that the radio's narrow band shows: a siren's
harmonics reach 8 kHz), and saves each as a spectrogram above its
reference turns: ``docs/images/simulate-<preset>.png`` (a 64-colour PNG, to stay small).

    .venv/bin/python bench/spectrograms.py
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from common import AMI, POOL, PROTOCOL, ROOT
from PIL import Image

from diartune.simulate import parse_options, simulate
from diartune.simulate.presets import PRESET_NAMES, PresetName, merge_options, preset_options

SECONDS = 20.0
CONVERSATIONS = 24


def simulate_preset(name: PresetName, folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A few train conversations of preset ``name``: the corpus folder and its layout."""
    ami = {"kind": "protocol", "database": str(AMI / "database.yml"), "protocol": PROTOCOL}
    mine = {
        "sources": [
            ami | {"subsets": ["train"], "uriAliases": {"trn00": "trñ00"}},
            {"kind": "pool", "manifest": str(POOL)},
        ],
        "splits": {"train": {"conversations": CONVERSATIONS, "speakerShare": 1.0}},
        "conversation": {"seconds": SECONDS},
    }
    corpus = simulate(parse_options(merge_options(preset_options(name), mine)), folder).parent
    return corpus, json.loads((corpus / "layout/train.json").read_text(encoding="utf-8"))


def caption(name: str, layout: dict[str, Any]) -> str:
    """What the picture shows: the file, its noise, its reverberation, its radio."""
    speakers = len({turn["speaker"] for turn in layout["turns"]})
    parts = [f"--preset {name}: {layout['uri']}, {speakers} speakers"]
    noise, reverb = layout["noise"], layout["reverb"]
    parts.append(
        f"{'+'.join(noise['kinds'])} at SNR {noise['snrDb']:.1f} dB" if noise else "no noise"
    )
    parts.append(f"RT60 {reverb['rt60Seconds']:.2f} s" if reverb else "no reverb")
    parts.append(f"radio: {layout['radio']['speaker']}" if layout["radio"] else "no radio")
    return ", ".join(parts)


def plot(audio: np.ndarray, layout: dict[str, Any], title: str, path: Path) -> None:
    """The spectrogram (0-8 kHz) above each speaker's turns; radio turns and squelch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import spectrogram

    frequencies, times, power = spectrogram(audio, fs=16000, nperseg=512, noverlap=384)
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 4.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.pcolormesh(
        times, frequencies / 1000, 10 * np.log10(power + 1e-12), shading="auto",
        cmap="magma", vmin=-120, vmax=-40, rasterized=True,
    )  # fmt: skip
    top.set_ylabel("kHz")
    top.set_title(title, fontsize=9)
    speakers = list(dict.fromkeys(turn["speaker"] for turn in layout["turns"]))
    radio = layout["radio"] or {"speaker": None, "squelchMs": []}
    tails = iter(radio["squelchMs"])
    for row, speaker in enumerate(speakers):
        for turn in (turn for turn in layout["turns"] if turn["speaker"] == speaker):
            start = turn["onsetMs"] / 1000
            length = (turn["sourceEndMs"] - turn["sourceStartMs"]) / 1000
            bottom.broken_barh([(start, length)], (row - 0.4, 0.8), color=f"C{row}")
            if speaker == radio["speaker"]:
                squelch = (start + length, next(tails) / 1000)
                bottom.broken_barh([squelch], (row - 0.4, 0.8), color="0.6")
    labels = [
        f"{speaker.split('.', 1)[1]} (radio)" if speaker == radio["speaker"] else speaker
        for speaker in speakers
    ]
    bottom.set_yticks(range(len(speakers)), [label.split(".")[-1] for label in labels])
    bottom.set_ylim(len(speakers) - 0.5, -0.5)
    bottom.set_xlim(0, len(audio) / 16000)
    bottom.set_xlabel("seconds (bars: reference turns; grey: squelch tails)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=80)
    plt.close(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(buffer).convert("RGB")
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def pick(name: PresetName, layouts: list[dict[str, Any]]) -> dict[str, Any]:
    """The file to show: the first, or for ``ems`` the radio file with the least noise."""
    if name != "ems":
        return layouts[0]
    radio = [layout for layout in layouts if layout["radio"]]
    return min(radio, key=lambda layout: (len(layout["noise"]["kinds"]), -layout["noise"]["snrDb"]))


def main() -> None:
    import soundfile

    with tempfile.TemporaryDirectory() as scratch:
        for name in PRESET_NAMES:
            corpus, layouts = simulate_preset(name, Path(scratch) / name)
            layout = pick(name, layouts)
            audio, _ = soundfile.read(corpus / "audio" / f"{layout['uri']}.wav")
            path = ROOT / "docs" / "images" / f"simulate-{name}.png"
            plot(audio, layout, caption(name, layout), path)
            print(f"{path.relative_to(ROOT)}: {caption(name, layout)}")


if __name__ == "__main__":
    main()
