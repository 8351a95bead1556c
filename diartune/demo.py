"""The README demo: tune on simulated conversations, score on speakers it never saw.

The corpus is made by ``diartune simulate`` from real speech: the AMI speakers of
ami-debug's train subset and the 35 read-speech speakers of speech-pool, laid out as
conversations of 2 to 4 speakers with pauses, overlaps, emergency-scene noise and
reverberation. Train, development and test have **different speakers**: the tuning
scores development files, and the test subset, evaluated once at the end, measures
what the tuned pipeline does on voices neither the segmentation model nor the tuning
heard. ami-debug's development subset is left out, so that the offline models can be
scored on real AMI meetings they never saw (``bench/offline_models.py``).

Trials run one at a time: SMAC's proposals then depend only on the seed and on the
results, not on which of two parallel trials finished first, so two runs of the demo
print the same numbers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from diartune.quiet import routed

SPLITS = {"train": 48, "development": 16, "test": 16}
PROTOCOL = "Sim.SpeakerDiarization.Conversations"
AMI_PROTOCOL = "Debug.SpeakerDiarization.Debug"
# ami-debug's train RTTM and UEM name this file without its tilde (kept as upstream ships it).
AMI_ALIASES = {"trn00": "trñ00"}


def corpus_options(ami: Path, pool: Path, seed: int = 0) -> dict[str, Any]:
    """The ``diartune simulate`` options of the demo corpus (YAML keys, as in docs)."""
    shares = {"train": 0.7, "development": 0.15, "test": 0.15}
    return {
        "sources": [
            {
                "kind": "protocol",
                "database": str(ami),
                "protocol": AMI_PROTOCOL,
                "subsets": ["train"],
                "uriAliases": AMI_ALIASES,
            },
            {"kind": "pool", "manifest": str(pool)},
        ],
        "protocol": PROTOCOL,
        "splits": {
            subset: {"conversations": count, "speakerShare": shares[subset]}
            for subset, count in SPLITS.items()
        },
        "seed": seed,
    }


def make_corpus(folder: Path, ami: Path, pool: Path, seed: int = 0) -> Path:
    """Simulate the demo corpus into ``folder`` (once); return its database.yml.

    Raises ``SimulationError`` (one line naming the option or file) on bad sources.
    """
    from diartune.simulate import parse_options, simulate

    database = folder / "database.yml"
    if database.exists():
        return database
    return simulate(parse_options(corpus_options(ami, pool, seed), "demo corpus"), folder)


def demo_spec(database: Path, models: Path, quick: bool) -> dict[str, Any]:
    """The DiarizationTuning of the demo (written to ``<output>/demo.yaml``)."""
    return {
        "apiVersion": "diartune.io/v1alpha1",
        "kind": "DiarizationTuning",
        "metadata": {"name": "demo"},
        "spec": {
            "data": {"database": str(database), "protocol": PROTOCOL},
            "pipeline": {
                "segmentation": str(models / "segmentation.ckpt"),
                "embedding": str(models / "embedding.ckpt"),
            },
            "stages": [
                {
                    "name": "segmentation",
                    "fineTune": {"maxEpochs": 1, "batchesPerEpoch": 10 if quick else 20},
                    "searchSpace": {
                        "training.learning_rate": {
                            "type": "float",
                            "low": 1e-5,
                            "high": 1e-3,
                            "log": True,
                        },
                        "segmentation.min_duration_off": {"type": "float", "low": 0.0, "high": 1.0},
                    },
                    "maxTrialCount": 2 if quick else 4,
                },
                {
                    "name": "clustering",
                    "searchSpace": {
                        "clustering.threshold": {"type": "float", "low": 0.05, "high": 1.0},
                        "clustering.method": {
                            "type": "categorical",
                            "choices": ["average", "centroid", "weighted"],
                        },
                        "clustering.min_cluster_size": {"type": "int", "low": 1, "high": 20},
                    },
                    "maxTrialCount": 4 if quick else 20,
                },
            ],
            "optimizer": {"seed": 0, "initialDesignSize": 2 if quick else 6},
            "parallelTrialCount": 1,
            "maxFailedTrialCount": 2,
        },
    }


def run_demo(
    output: Path, ami: Path, pool: Path, quick: bool = False, verbose: bool = False
) -> int:
    """Make the corpus and models under ``output``, then tune; print the summary.

    Parameters
    ----------
    output
        Folder of the corpus, the models and the tuning (``run/``).
    ami
        ami-debug's ``database.yml``: the AMI speakers of its train subset.
    pool
        speech-pool's ``manifest.csv``: one real speaker per file.
    quick
        Fewer epochs and trials, for a smoke test.
    verbose
        Show what pyannote and lightning print; otherwise it goes to ``output/models.log``
        and to each trial's log.

    Returns the exit status: 0 when the tuning succeeded, 1 when it failed, 2 when the
    sources cannot make the corpus (the reason printed on one line).
    """
    from diartune.local.tuning import LocalTuning
    from diartune.simulate import SimulationError
    from diartune.spec.file import parse_tuning
    from diartune.spec.model import Data
    from diartune.trial.bootstrap import make_models

    start = time.monotonic()
    models = output / "models"
    log = output / "models.log"
    print(f"making the demo corpus and models (their log: {log})", flush=True)
    try:
        database = make_corpus(output / "corpus", ami, pool)
    except SimulationError as error:
        print(f"diartune demo: {error}")
        return 2
    with routed(log, verbose):
        make_models(
            Data(database=str(database), protocol=PROTOCOL),
            models,
            epochs=10 if quick else 40,
            batches_per_epoch=40,
        )
    print(f"corpus and models ready in {time.monotonic() - start:.0f} s", flush=True)
    document = demo_spec(database.resolve(), models.resolve(), quick)
    (output / "demo.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    tuning = parse_tuning(document, str(output / "demo.yaml"))
    summary = LocalTuning(tuning, output / "run", verbose=verbose).run()
    print(f"demo wall time: {time.monotonic() - start:.0f} s")
    return 0 if summary.phase == "Succeeded" else 1
