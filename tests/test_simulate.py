"""``diartune simulate`` on real speech: determinism, disjoint speakers, exact references."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import yaml
from conftest import ROOT, ami_source

from diartune.cli import main
from diartune.cli import parser as cli_parser
from diartune.corpus import corpus_problems
from diartune.simulate import SimulationError, add_simulate_parser, parse_options, simulate
from diartune.simulate.presets import merge_options, preset_options
from diartune.simulate.radio import mu_law
from diartune.simulate.sources import energy_regions, nfc, read_audio

POOL = ROOT.parent / "shared/data/speech-pool"
AMI_PROTOCOL = "Debug.SpeakerDiarization.Debug"
SMALL = {
    "splits": {
        "train": {"conversations": 3, "speakerShare": 0.5},
        "development": {"conversations": 2, "speakerShare": 0.25},
        "test": {"conversations": 2, "speakerShare": 0.25},
    },
    "conversation": {"seconds": 12, "speakers": {2: 1.0}},
}


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest of 8 speech-pool speakers (two files each at most), to keep tests fast."""
    if not (POOL / "manifest.csv").exists():
        pytest.fail(f"{POOL}: the speech-pool corpus is missing")
    with (POOL / "manifest.csv").open(newline="") as stream:
        rows = sorted(csv.DictReader(stream), key=lambda row: row["file"])
    chosen: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        files = chosen.setdefault(row["speaker_id"], [])
        if len(files) < 2 and float(row["duration_s"]) >= 3:
            files.append({"file": str(POOL / row["file"]), "speaker_id": row["speaker_id"]})
    speakers = [files for files in chosen.values() if files][:8]
    manifest = tmp_path_factory.mktemp("pool") / "manifest.csv"
    with manifest.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, ["file", "speaker_id"])
        writer.writeheader()
        writer.writerows(row for files in speakers for row in files)
    return manifest


def pool_options(manifest: Path, **changes: Any) -> dict[str, Any]:
    return {"sources": [{"kind": "pool", "manifest": str(manifest)}], **SMALL, **changes}


def ami_options(**changes: Any) -> dict[str, Any]:
    source = {
        "kind": "protocol",
        "database": str(ami_source() / "database.yml"),
        "protocol": AMI_PROTOCOL,
        "name": "ami",
        "uriAliases": {"trn00": "trñ00"},
    }
    return {"sources": [source], "minSpeakerSeconds": 1.0, **SMALL, **changes}


def digests(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def rttm_speakers(folder: Path, subset: str) -> set[str]:
    return {line.split()[7] for line in (folder / f"{subset}.rttm").read_text().splitlines()}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(
    pool: Path, tmp_path: Path
) -> None:
    first = simulate(parse_options(pool_options(pool)), tmp_path / "a").parent
    again = simulate(parse_options(pool_options(pool)), tmp_path / "b").parent
    other = simulate(parse_options(pool_options(pool, seed=1)), tmp_path / "c").parent
    assert digests(first) == digests(again)
    assert len([name for name in digests(first) if name.endswith(".wav")]) == 7
    changed = {name for name, digest in digests(first).items() if digests(other)[name] != digest}
    assert {"audio/train_0000.wav", "train.rttm"} <= changed


def test_splits_have_disjoint_speakers_unless_shared(pool: Path, tmp_path: Path) -> None:
    corpus = simulate(parse_options(pool_options(pool)), tmp_path / "disjoint").parent
    report = json.loads((corpus / "report.json").read_text())
    subsets = ("train", "development", "test")
    members = {name: set(report["subsets"][name]["secondsPerSpeaker"]) for name in subsets}
    assert sum(len(speakers) for speakers in members.values()) == 8
    for one, other in ((0, 1), (0, 2), (1, 2)):
        assert not members[subsets[one]] & members[subsets[other]]
    for name in subsets:
        assert rttm_speakers(corpus, name) <= members[name]

    shared = simulate(parse_options(pool_options(pool, sharedSpeakers=True)), tmp_path / "s")
    report = json.loads((shared.parent / "report.json").read_text())
    assert all(subset["speakers"] == 8 for subset in report["subsets"].values())


def test_conversations_follow_the_turn_taking_rules(pool: Path, tmp_path: Path) -> None:
    options = pool_options(
        pool, conversation={"seconds": 20, "speakers": {3: 1.0}, "overlapProbability": 0.9}
    )
    options["splits"] = {"train": {"conversations": 4, "speakerShare": 1.0}}
    corpus = simulate(parse_options(options), tmp_path / "busy").parent
    layouts = json.loads((corpus / "layout/train.json").read_text())
    for layout in layouts:
        talking = np.zeros(20_000, dtype=int)
        for previous, turn in zip(layout["turns"], layout["turns"][1:], strict=False):
            assert turn["speaker"] != previous["speaker"]
        for turn in layout["turns"]:
            length = turn["sourceEndMs"] - turn["sourceStartMs"]
            assert turn["onsetMs"] + length <= 20_000
            talking[turn["onsetMs"] : turn["onsetMs"] + length] += 1
        assert talking.max() == 2
        assert len({turn["speaker"] for turn in layout["turns"]}) == 3
    busy = json.loads((corpus / "report.json").read_text())["subsets"]["train"]
    options["conversation"]["overlapProbability"] = 0.0
    calm = simulate(parse_options(options), tmp_path / "calm").parent
    report = json.loads((calm / "report.json").read_text())["subsets"]["train"]
    assert report["overlapRatio"] == 0.0 < 0.1 < busy["overlapRatio"]


def test_energy_trimming_drops_leading_and_trailing_silence(pool: Path) -> None:
    with pool.open(newline="") as stream:
        speech = read_audio(Path(next(csv.DictReader(stream))["file"]))
    regions = energy_regions(speech, trim_db=35.0, min_pause_ms=300)
    silence = np.zeros(8000, dtype=np.float32)  # 0.5 s
    padded = energy_regions(np.concatenate([silence, speech, silence]), 35.0, 300)
    assert padded == [(start + 500, end + 500) for start, end in regions]
    assert padded[0][0] >= 500 and padded[-1][1] <= 500 + len(speech) // 16


@pytest.mark.integration
def test_references_are_exact_on_real_ami_speech(tmp_path: Path) -> None:
    from pyannote.core import Segment
    from pyannote.database.util import load_rttm

    options = ami_options(noise=None, reverb=None)
    options["splits"] = {
        "train": {"conversations": 3, "speakerShare": 0.8},
        "test": {"conversations": 2, "speakerShare": 0.2},
    }
    corpus = simulate(parse_options(options), tmp_path / "ami").parent
    source = {}
    for subset in ("train", "development"):
        rttm = load_rttm(ami_source() / f"debug.{subset}.rttm")
        source |= {("trñ00" if uri == "trn00" else uri): turns for uri, turns in rttm.items()}
    for subset in ("train", "test"):
        reference = load_rttm(corpus / f"{subset}.rttm")
        for layout in json.loads((corpus / f"layout/{subset}.json").read_text()):
            turns = layout["turns"]
            laid_out = [
                (onset, onset + turn["sourceEndMs"] - turn["sourceStartMs"], turn["speaker"])
                for turn in turns
                for onset in [turn["onsetMs"]]
            ]
            written = [
                (round(segment.start * 1000), round(segment.end * 1000), label)
                for segment, _, label in reference[layout["uri"]].itertracks(yield_label=True)
            ]
            assert sorted(written) == sorted(laid_out)
            mix, rate = soundfile.read(corpus / "audio" / f"{layout['uri']}.wav", dtype="float64")
            rebuilt = np.zeros_like(mix)
            for turn in turns:
                start, end = turn["sourceStartMs"], turn["sourceEndMs"]
                piece = read_audio(Path(turn["source"]))[start * 16 : end * 16]
                onset = turn["onsetMs"] * 16
                rebuilt[onset : onset + len(piece)] += piece * turn["gain"]
                # the piece is real speech of this speaker alone
                around = source[Path(turn["source"]).stem].crop(Segment(start / 1000, end / 1000))
                assert {nfc(str(label)) for label in around.labels()} == {turn["speaker"][4:]}
            assert rate == 16000 and np.abs(mix - rebuilt).max() <= 1 / 32768


@pytest.mark.integration
def test_ami_debug_uri_mismatch_is_refused_with_the_fix(tmp_path: Path) -> None:
    options = ami_options()
    del options["sources"][0]["uriAliases"]
    with pytest.raises(SimulationError) as error:
        simulate(parse_options(options), tmp_path / "x")
    message = str(error.value)
    assert "debug.train.rttm" in message and "'trn00'" in message and "'trñ00'" in message
    assert "uriAliases" in message and "\n" not in message
    assert not (tmp_path / "x").exists()


def bad_inputs(pool: Path, tmp_path: Path) -> dict[str, tuple[dict[str, Any], str]]:
    """Options that must fail, with a part of the one-line message each must give."""
    no_rttm = tmp_path / "no-rttm.yml"
    subset = {"train": {"uri": str(ami_source() / "debug.development.lst")}}
    no_rttm.write_text(
        yaml.safe_dump(
            {
                "Databases": {"X": str(ami_source() / "{uri}.wav")},
                "Protocols": {"X": {"SpeakerDiarization": {"P": subset}}},
            }
        )
    )
    broken = tmp_path / "broken.yml"
    broken.write_text("Protocols: {X: [\n")
    bad_column = tmp_path / "bad.csv"
    bad_column.write_text("path,speaker\nx.wav,a\n")
    header, *rows = pool.read_text().splitlines()
    first_two = sorted({row.split(",")[1] for row in rows})[:2]
    two = tmp_path / "two.csv"
    two.write_text("\n".join([header, *(row for row in rows if row.split(",")[1] in first_two)]))
    protocol = {"kind": "protocol", "protocol": "X.SpeakerDiarization.P"}
    return {
        "missing database": (
            {"sources": [{**protocol, "database": str(tmp_path / "nowhere.yml")}]},
            "sources[0].database: ",
        ),
        "broken database": (
            {"sources": [{**protocol, "database": str(broken)}]},
            "sources[0]: ",
        ),
        "no RTTM": (
            {"sources": [{**protocol, "database": str(no_rttm)}]},
            "has no annotation (RTTM)",
        ),
        "missing manifest": (
            {"sources": [{"kind": "pool", "manifest": str(tmp_path / "none.csv")}]},
            "sources[0].manifest: ",
        ),
        "missing column": (
            {"sources": [{"kind": "pool", "manifest": str(bad_column)}]},
            "has no column 'file'",
        ),
        "too few speakers": (pool_options(two), "need at least 3 speakers"),
        "too many per conversation": (
            pool_options(pool, conversation={"speakers": {4: 1.0}}),
            "conversations of up to 4 speakers, but the development subset has 2",
        ),
        "bad option": (
            pool_options(pool, conversation={"overlapProbability": 2}),
            "conversation.overlapProbability: ",
        ),
        "unknown option": (pool_options(pool, overlap=0.3), "overlap: unknown field"),
        "radio band": (pool_options(pool, radio={"bandHz": [300, 5000]}), "radio.bandHz: "),
    }


def test_bad_input_gives_one_line_naming_the_option_or_file(pool: Path, tmp_path: Path) -> None:
    for case, (document, expected) in bad_inputs(pool, tmp_path).items():
        with pytest.raises(SimulationError) as error:
            simulate(parse_options(document), tmp_path / "out")
        assert expected in str(error.value), case
        assert "\n" not in str(error.value), case
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(SimulationError, match=r"^output: .*full exists and is not an empty"):
        simulate(parse_options(pool_options(pool)), tmp_path / "full")


def run_cli(argv: list[str]) -> int:
    return main(["simulate", *argv])


def test_the_command_is_wired_without_loading_the_simulator() -> None:
    parser = argparse.ArgumentParser(prog="diartune")
    add_simulate_parser(parser.add_subparsers(dest="command", required=True))
    ours = parser.parse_args(["simulate", "--output", "o"])
    wired = cli_parser().parse_args(["simulate", "--output", "o"])
    assert vars(wired).keys() == vars(ours).keys()
    # scipy.signal takes seconds to import: other subcommands must not pay for it
    script = "import sys, diartune.cli; print('scipy.signal' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert found.stdout.strip() == "False", found.stderr


def test_cli_writes_a_corpus_that_pyannote_database_loads(
    pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyannote.database import registry

    config = tmp_path / "options.yaml"
    config.write_text("conversation: {seconds: 8, speakers: {2: 1.0}}\nnoise: {snrDb: [10, 10]}\n")
    argv = ["--config", str(config), "--pool", str(pool), "--output", str(tmp_path / "cli")]
    argv += ["--conversations", "train=2", "--conversations", "test=1", "--no-reverb"]
    argv += ["--conversations", "development=0", "--protocol", "Sim.SpeakerDiarization.Cli"]
    assert run_cli(argv) == 0
    assert "spec.data: database" in capsys.readouterr().out
    database = tmp_path / "cli" / "database.yml"
    # what a trial checks before it runs (diartune validate --data), confined as an S3 mirror
    assert corpus_problems(database, "Sim.SpeakerDiarization.Cli", confined=True) == []
    registry.load_database(str(database))
    protocol = registry.get_protocol("Sim.SpeakerDiarization.Cli")
    train, test = list(protocol.train()), list(protocol.test())
    assert [file["uri"] for file in train + test] == ["train_0000", "train_0001", "test_0000"]
    assert all(file["annotation"].labels() and file["annotated"].duration() == 8 for file in train)
    report = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert set(report["subsets"]) == {"train", "test"}
    assert report["options"]["reverb"] is None

    assert run_cli(["--pool", str(tmp_path / "none.csv"), "--output", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("diartune simulate: sources[0].manifest: ")
    assert error.count("\n") == 1
    assert run_cli(["--pool", str(pool), "--output", "o", "--conversations", "dev=3"]) == 2
    assert "--conversations: expected SUBSET=N" in capsys.readouterr().err
    assert run_cli(["--output", str(tmp_path / "y")]) == 2
    assert "sources: none given" in capsys.readouterr().err


def speakers_talking(layout: dict[str, Any], ms: int) -> np.ndarray:
    """How many people talk in each millisecond of a conversation, from its layout."""
    talking = np.zeros(ms, dtype=int)
    for turn in layout["turns"]:
        talking[turn["onsetMs"] : turn["onsetMs"] + turn_ms(turn)] += 1
    return talking


def turn_ms(turn: dict[str, Any]) -> int:
    return int(turn["sourceEndMs"] - turn["sourceStartMs"])


def layout_of(corpus: Path, subset: str = "train") -> list[dict[str, Any]]:
    return list(json.loads((corpus / f"layout/{subset}.json").read_text()))


def test_merge_options_lets_the_callers_options_win() -> None:
    mine = {
        "conversation": {"overlap_probability": 0.0, "speakers": {2: 1.0}},
        "noise": {"snrDb": [5, 5]},
        "reverb": None,
        "splits": {"train": {"conversations": 1, "speakerShare": 1.0}},
    }
    merged = merge_options(preset_options("ems"), mine)
    # groups merge key by key (snake_case is its camelCase alias); values replace whole
    assert merged["conversation"] == preset_options("ems")["conversation"] | {
        "overlapProbability": 0.0,
        "speakers": {2: 1.0},
    }
    assert merged["noise"] == {
        "probability": {"engine": 1.0, "siren": 0.6, "squelch": 0.6},
        "snrDb": [5, 5],
    }
    assert merged["reverb"] is None and merged["radio"] == preset_options("ems")["radio"]
    assert merge_options({"splits": {"train": 1, "test": 2}}, {"splits": {"train": 3}}) == {
        "splits": {"train": 3}
    }
    merged["conversation"]["turnSeconds"][0] = 9.0
    assert preset_options("ems")["conversation"]["turnSeconds"][0] == 0.5


def test_presets_make_the_domains_they_promise(pool: Path, tmp_path: Path) -> None:
    mine = {
        "sources": [{"kind": "pool", "manifest": str(pool)}],
        "splits": {"train": {"conversations": 8, "speakerShare": 1.0}},
        "conversation": {"seconds": 10},
    }
    found: dict[str, dict[str, Any]] = {}
    for name in ("source", "ems"):
        options = merge_options(preset_options(name), mine)
        corpus = simulate(parse_options(options), tmp_path / name).parent
        layouts = layout_of(corpus)
        talking = [speakers_talking(layout, 10_000) for layout in layouts]
        turns = [turn_ms(turn) / 1000 for layout in layouts for turn in layout["turns"]]
        found[name] = {
            "overlap": sum(np.count_nonzero(t > 1) for t in talking)
            / sum(np.count_nonzero(t) for t in talking),
            "turns": turns,
            "speakers": [len({turn["speaker"] for turn in layout["turns"]}) for layout in layouts],
            "snr": [layout["noise"]["snrDb"] for layout in layouts if layout["noise"]],
            "rt60": [layout["reverb"]["rt60Seconds"] for layout in layouts if layout["reverb"]],
            "radio": sum(layout["radio"] is not None for layout in layouts),
        }
        report = json.loads((corpus / "report.json").read_text())["subsets"]["train"]
        # the report shows what the layout holds
        assert report["overlapRatio"] == round(found[name]["overlap"], 4)
        assert report["turnSeconds"]["median"] == round(float(np.median(turns)), 3)
        assert report["withRadio"] == found[name]["radio"]
        assert (report["snrDb"] is None) == (not found[name]["snr"])
    source, ems = found["source"], found["ems"]
    assert source["overlap"] < 0.05 and ems["overlap"] > 0.12
    assert max(ems["turns"]) <= 3.0 and np.median(ems["turns"]) < np.median(source["turns"])
    assert set(source["speakers"]) <= {2, 3} and set(ems["speakers"]) <= {2, 3, 4}
    assert np.mean(ems["speakers"]) > np.mean(source["speakers"])
    assert source["snr"] == [] and len(ems["snr"]) == 8 and min(ems["snr"]) >= 0
    assert max(ems["snr"]) <= 12
    assert max(source["rt60"]) <= 0.35 and min(ems["rt60"]) >= 0.3
    assert np.mean(ems["rt60"]) > np.mean(source["rt60"]) + 0.15
    assert source["radio"] == 0 < ems["radio"] < 8


def band_share(audio: np.ndarray, low: float, high: float) -> float:
    """Share of the energy of ``audio`` (16 kHz) between ``low`` and ``high`` Hz."""
    power = np.abs(np.fft.rfft(audio)) ** 2
    frequency = np.fft.rfftfreq(len(audio), 1 / 16000)
    return float(power[(frequency >= low) & (frequency < high)].sum() / power.sum())


def test_the_radio_speaker_is_band_limited_and_squelched_in_the_audio(
    pool: Path, tmp_path: Path
) -> None:
    options = pool_options(
        pool,
        conversation={"seconds": 12, "speakers": {2: 1.0}, "overlapProbability": 0.0},
        splits={"train": {"conversations": 3, "speakerShare": 1.0}},
        noise=None,
        reverb=None,
    )
    radio = simulate(parse_options(options | {"radio": {"probability": 1.0}}), tmp_path / "r")
    plain = simulate(parse_options(options), tmp_path / "p")
    # the reference keeps each turn's bounds: the squelch tail is not speech
    assert (radio.parent / "train.rttm").read_bytes() == (plain.parent / "train.rttm").read_bytes()
    on_radio, off_radio = [], []
    for layout in layout_of(radio.parent):
        heard, _ = soundfile.read(radio.parent / f"audio/{layout['uri']}.wav")
        dry, _ = soundfile.read(plain.parent / f"audio/{layout['uri']}.wav")
        dispatcher = layout["radio"]["speaker"]
        turns = layout["turns"]
        mine = [turn for turn in turns if turn["speaker"] == dispatcher]
        assert len(layout["radio"]["squelchMs"]) == len(mine) > 0
        for turn, tail_ms in zip(mine, layout["radio"]["squelchMs"], strict=True):
            assert 100 <= tail_ms <= 250
            start, end = turn["onsetMs"] * 16, (turn["onsetMs"] + turn_ms(turn)) * 16
            on_radio.append(heard[start:end])
            off_radio.append(dry[start:end])
            later = [other["onsetMs"] * 16 for other in turns if other["onsetMs"] * 16 >= end]
            if min(later, default=len(dry)) >= end + tail_ms * 16:  # silence after the turn
                tail = slice(end, end + tail_ms * 16)
                assert not dry[tail].any()
                assert np.sqrt(np.mean(heard[tail] ** 2)) > 0.3 * np.sqrt(
                    np.mean(dry[start:end] ** 2)
                )
    speech, original = np.concatenate(on_radio), np.concatenate(off_radio)
    assert band_share(speech, 3500, 8000) < 0.1 * band_share(original, 3500, 8000)
    assert band_share(speech, 0, 250) < 0.1 * band_share(original, 0, 250)
    # nothing above the 4 kHz of an 8 kHz channel (a band-pass alone leaves 1-4 % of it)
    assert band_share(speech, 4000, 8000) < 1e-3 * band_share(original, 4000, 8000)
    assert band_share(speech, 300, 3400) > 0.95


def test_preset_ems_from_the_command_is_deterministic_and_flags_win(
    pool: Path, tmp_path: Path
) -> None:
    argv = ["--preset", "ems", "--pool", str(pool), "--seconds", "8", "--conversations"]
    argv += ["train=4", "--conversations", "development=0", "--conversations", "test=0"]
    assert run_cli([*argv, "--output", str(tmp_path / "a")]) == 0
    assert run_cli([*argv, "--output", str(tmp_path / "b")]) == 0
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    layouts = layout_of(tmp_path / "a")
    assert any(layout["radio"] for layout in layouts)
    assert all("engine" in layout["noise"]["kinds"] for layout in layouts)

    config = tmp_path / "mine.yaml"
    config.write_text("conversation: {overlapProbability: 0.0}\nradio: null\n")
    assert run_cli([*argv, "--config", str(config), "--output", str(tmp_path / "c")]) == 0
    layouts = layout_of(tmp_path / "c")
    assert not any(layout["radio"] for layout in layouts)
    assert all(speakers_talking(layout, 8000).max() == 1 for layout in layouts)
    assert all(0 <= layout["noise"]["snrDb"] <= 12 for layout in layouts)  # the rest is ems


def test_the_radio_codec_is_8_bit_mu_law() -> None:
    assert len(np.unique(mu_law(np.linspace(-1, 1, 100_001)))) == 255
    tone = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000 + 0.1)
    for amplitude in (0.5, 0.01):  # companding: loud and quiet speech alike keep ~35 dB
        signal = amplitude * tone
        noise = signal - mu_law(signal)
        assert 30 < 10 * np.log10(np.sum(signal**2) / np.sum(noise**2)) < 45
