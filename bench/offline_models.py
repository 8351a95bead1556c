"""Benchmark: where the offline models' error on real AMI speech goes.

The offline models (``make_models``; by default the demo's, trained on the simulated
corpus of ``--seed``) with pyannote's default parameters on ami-debug's development
subset: real AMI meetings whose speakers no training conversation holds. Issue 10 asks
for a DER below 45 %. Each file's DER is split into missed speech, false alarm and
confusion (shares of its reference speech, so they add up to the DER), beside the
reference's speech, overlap and speakers and the speakers the pipeline found, so that a
miss says which stage causes it: the segmentation (missed speech beyond the overlap,
false alarm) or the embedding and clustering (confusion, also with the pipeline told
how many speakers each file has).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common import AMI, PROTOCOL, machine, offline_models, write_table


def error_rows(models: tuple[Path, Path]) -> list[dict[str, Any]]:
    """One row per development file and one for all of them; then the same rows with the
    pipeline told each file's number of speakers, which isolates what the embedding and
    clustering can do."""
    from pyannote.audio import Model

    from diartune.spec.model import Objective
    from diartune.spec.params import pipeline_defaults
    from diartune.trial.data import load_protocol, subset_files
    from diartune.trial.evaluate import score
    from diartune.trial.pipeline import build_pipeline, diarize

    protocol = load_protocol(AMI / "database.yml", PROTOCOL, ("development",))
    files = subset_files(protocol, "development")
    segmentation, embedding = (Model.from_pretrained(path).eval() for path in models)
    defaults = dict(pipeline_defaults("AgglomerativeClustering"))
    pipeline = build_pipeline(segmentation, embedding, "AgglomerativeClustering", defaults, set())
    told = {}  # the same pipeline told each file's number of speakers
    for file in files:
        output = pipeline(file, num_speakers=len(file["annotation"].labels()))
        told[file["uri"]] = getattr(output, "speaker_diarization", output)
    rows = []
    for given, hypotheses in ((False, diarize(pipeline, files, None, {})), (True, told)):
        total, per_file = score(files, hypotheses, Objective())
        for file in files:
            reference = file["annotation"].crop(file["annotated"])
            found = len(hypotheses[file["uri"]].labels())
            rows.append(_row(file["uri"], given, per_file[file["uri"]], reference, found))
        rows.append(_row("all", given, total))
    return rows


def _row(
    name: str, given: bool, parts: Any, reference: Any = None, found: int | None = None
) -> dict[str, Any]:
    """DER and its parts (% of the reference speech); the reference's facts when known."""
    speech = parts.reference_speech_seconds
    facts: dict[str, Any] = {"overlap_s": "", "speakers": "", "found": ""}
    if reference is not None:
        facts = {
            "overlap_s": round(reference.get_overlap().duration(), 1),
            "speakers": len(reference.labels()),
            "found": found,
        }
    return {
        "file": name,
        "speakers_given": given,
        "speech_s": round(speech, 1),
        **facts,
        "der": 100 * (parts.der or 0.0),
        "missed": 100 * parts.missed_speech_seconds / speech,
        "false_alarm": 100 * parts.false_alarm_seconds / speech,
        "confusion": 100 * parts.confusion_seconds / speech,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--models", type=Path, help="folder of segmentation.ckpt and embedding.ckpt"
    )
    parser.add_argument("--seed", type=int, default=0, help="the demo's models of this seed")
    parser.add_argument("--output", default="bench-output")
    args = parser.parse_args()
    if args.models is None:
        models = offline_models(args.seed)
    else:
        models = (args.models / "segmentation.ckpt", args.models / "embedding.ckpt")
    rows = error_rows(models)
    for row in rows:
        print(row, flush=True)
    print(f"{machine()} | models {models[0].parent}")
    write_table(Path(args.output), "offline_models", rows)


if __name__ == "__main__":
    main()
