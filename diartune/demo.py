"""The README demo: adapt a pipeline pretrained on one domain to another, score it on
speakers it never saw.

The scenario is ``diartune.adaptation``'s: a segmentation model trained from scratch on
clean ``source`` conversations (ami-debug's train speakers and part of speech-pool's) is
the user's pretrained model; the target is ``ems`` audio (paramedic and dispatch
conversations) of the other speech-pool speakers, split into train, development and test
with different speakers. On the test speakers the demo prints three arms side by side:
A0, the source model with pyannote's defaults; B0, pyannote's tutorial fine-tuning with
the defaults; C, diartune's two-stage tuning; then the paired gains. Intervals come from
a bootstrap over the test speakers and files (files share speakers). It also scores the
source model on held-out ``source`` conversations, to show it is good on its own domain.

Trials run one at a time: SMAC's proposals then depend only on the seed and on the
results, not on which of two parallel trials finished first, so two runs of the demo
print the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from diartune.adaptation import (
    SOURCE_PROTOCOL,
    TARGET_PROTOCOL,
    domain_options,
    simulate_once,
    source_sources,
    split_pool,
    target_sources,
)
from diartune.quiet import routed
from diartune.records import Components, FileScores
from diartune.spec.model import Data


@dataclass(frozen=True)
class Budget:
    """Every size of the demo, in one place (measured costs in BENCHMARKS.md "The demo")."""

    source_train: int  # source conversations the source model is trained on
    source_test: int  # held-out source conversations it is scored on
    target_train: int
    target_development: int
    target_test: int
    source_epochs: int
    tutorial_epochs: int  # at most; early stopping usually ends it sooner
    fine_tune_batches: int
    fine_tune_trials: int
    clustering_trials: int
    initial_design: int


FULL = Budget(
    source_train=48,
    source_test=16,
    target_train=32,
    target_development=16,
    target_test=48,
    source_epochs=12,
    tutorial_epochs=4,
    fine_tune_batches=6,
    fine_tune_trials=2,
    clustering_trials=16,
    initial_design=4,
)
QUICK = Budget(
    source_train=8,
    source_test=4,
    target_train=8,
    target_development=4,
    target_test=8,
    source_epochs=2,
    tutorial_epochs=2,
    fine_tune_batches=2,
    fine_tune_trials=2,
    clustering_trials=3,
    initial_design=2,
)


#: The no-shift corpus: the demo's before the adaptation scenario, one domain (the
#: simulator's defaults), speakers disjoint across subsets. The benches keep it as the
#: negative control, where a gain near 0 is the right answer.
SPLITS = {"train": 48, "development": 16, "test": 16}
PROTOCOL = "Sim.SpeakerDiarization.Conversations"


def corpus_options(ami: Path, pool: Path, seed: int = 0) -> dict[str, Any]:
    """The ``diartune simulate`` options of the no-shift corpus (YAML keys, as in docs)."""
    shares = {"train": 0.7, "development": 0.15, "test": 0.15}
    return {
        "sources": [*source_sources(ami, pool)[:1], {"kind": "pool", "manifest": str(pool)}],
        "protocol": PROTOCOL,
        "splits": {
            subset: {"conversations": count, "speakerShare": shares[subset]}
            for subset, count in SPLITS.items()
        },
        "seed": seed,
    }


def make_corpus(folder: Path, ami: Path, pool: Path, seed: int = 0) -> Path:
    """Simulate the no-shift corpus into ``folder`` (once); return its database.yml.

    Raises ``SimulationError`` (one line naming the option or file) on bad sources.
    """
    return simulate_once(corpus_options(ami, pool, seed), folder, "no-shift corpus")


def source_options(ami: Path, manifest: Path, budget: Budget) -> dict[str, Any]:
    """The source corpus: train for the source model, test to score it on its own domain."""
    splits = {"train": (budget.source_train, 0.8), "test": (budget.source_test, 0.2)}
    return domain_options("source", source_sources(ami, manifest), splits, SOURCE_PROTOCOL)


def make_source_model(
    folder: Path, ami: Path, manifest: Path, budget: Budget, verbose: bool = False
) -> tuple[Path, Path, Data]:
    """Simulate the source corpus into ``folder/corpus`` and train the source model on it
    (both kept when there); return its segmentation and embedding checkpoints and corpus.

    What pyannote and lightning print goes to ``folder/models.log`` unless ``verbose``.
    Raises ``SimulationError`` (one line naming the option or file) on bad sources.
    """
    from diartune.trial.bootstrap import make_models

    database = simulate_once(source_options(ami, manifest, budget), folder / "corpus", "source")
    data = Data(database=str(database.resolve()), protocol=SOURCE_PROTOCOL)
    with routed(folder / "models.log", verbose):
        segmentation, embedding = make_models(data, folder, budget.source_epochs, 40)
    return segmentation, embedding, data


def target_options(manifest: Path, budget: Budget) -> dict[str, Any]:
    """The ems corpus: train and development to adapt on, test (most speakers) to score."""
    splits = {
        "train": (budget.target_train, 0.35),
        "development": (budget.target_development, 0.2),
        "test": (budget.target_test, 0.45),
    }
    return domain_options("ems", target_sources(manifest), splits, TARGET_PROTOCOL)


def demo_spec(database: Path, models: Path, budget: Budget) -> dict[str, Any]:
    """C: the DiarizationTuning of the demo (written to ``<output>/demo.yaml``)."""
    return {
        "apiVersion": "diartune.io/v1alpha1",
        "kind": "DiarizationTuning",
        "metadata": {"name": "demo"},
        "spec": {
            "data": {"database": str(database), "protocol": TARGET_PROTOCOL},
            "pipeline": {
                "segmentation": str(models / "segmentation.ckpt"),
                "embedding": str(models / "embedding.ckpt"),
            },
            "stages": [
                {
                    "name": "segmentation",
                    "fineTune": {
                        "maxEpochs": budget.tutorial_epochs,
                        "batchesPerEpoch": budget.fine_tune_batches,
                    },
                    "searchSpace": {
                        "training.learning_rate": {
                            "type": "float",
                            "low": 1e-5,
                            "high": 1e-3,
                            "log": True,
                        },
                        "segmentation.min_duration_off": {"type": "float", "low": 0.0, "high": 1.0},
                    },
                    "maxTrialCount": budget.fine_tune_trials,
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
                    "maxTrialCount": budget.clustering_trials,
                },
            ],
            "optimizer": {"seed": 0, "initialDesignSize": budget.initial_design},
            "parallelTrialCount": 1,
            "maxFailedTrialCount": 2,
        },
    }


class _Clock:
    """Wall seconds per phase, printed as each ends."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()

    def lap(self, what: str) -> None:
        now = time.monotonic()
        print(f"{what}: {now - self.last:.0f} s", flush=True)
        self.last = now


def _parts(components: Components) -> str:
    return (
        f"missed {components.missed_speech_percent}, false alarm "
        f"{components.false_alarm_percent}, confusion {components.confusion_percent}"
    )


def _row(name: str, scores: FileScores, components: Components, speakers: list[list[str]]) -> str:
    from diartune.search.statistics import estimate_by_speakers

    found = estimate_by_speakers(scores, speakers)
    return (
        f"{name:<34} {100 * found.value:6.2f} % [{100 * found.low:6.2f}, {100 * found.high:6.2f}]"
        f"  ({_parts(components)})"
    )


def _gain(name: str, better: FileScores, worse: FileScores, speakers: list[list[str]]) -> str:
    from diartune.search.statistics import compare_by_speakers

    found = compare_by_speakers(better, worse, speakers)
    verdict = (
        ("significantly better" if found.gain > 0 else "significantly worse")
        if found.significant
        else "not significant, the interval includes 0"
    )
    return (
        f"{name:<12} {100 * found.gain:+6.2f} DER points [{100 * found.low:+.2f}, "
        f"{100 * found.high:+.2f}]: {verdict}"
    )


def run_demo(
    output: Path,
    ami: Path,
    pool: Path,
    quick: bool = False,
    verbose: bool = False,
) -> int:
    """Make the corpora and the source model under ``output``, adapt it three ways, print.

    Parameters
    ----------
    output
        Folder of the corpora, the models, the tuning (``run/``) and the scores.
    ami
        ami-debug's ``database.yml``: the AMI speakers of its train subset (source).
    pool
        speech-pool's ``manifest.csv``: one real speaker per file (source and target).
    quick
        The ``QUICK`` budget, for a smoke test.
    verbose
        Show what pyannote and lightning print; otherwise it goes to ``output/models.log``
        and to each trial's log.

    Returns the exit status: 0 when every arm was scored, 1 when the tuning failed, 2 when
    the sources cannot make the corpora (the reason printed on one line).
    """
    from diartune.adaptation import file_speakers, score_defaults, tutorial_fine_tune
    from diartune.local.tuning import LocalTuning
    from diartune.search.study import DEFAULTS, evaluation_name
    from diartune.simulate import SimulationError
    from diartune.spec.file import parse_tuning

    budget = QUICK if quick else FULL
    clock = _Clock()
    log = output / "models.log"
    models = (output / "source-model").resolve()
    print(f"making the corpora and the source model (their logs: {log}, {models})", flush=True)
    try:
        source_manifest, target_manifest = split_pool(pool, output / "speakers")
        target = simulate_once(
            target_options(target_manifest, budget), output / "ems-corpus", "ems"
        )
        clock.lap("ems corpus")
        segmentation, embedding, source_data = make_source_model(
            models, ami, source_manifest, budget, verbose
        )
    except SimulationError as error:
        print(f"diartune demo: {error}")
        return 2
    target_data = Data(database=str(target.resolve()), protocol=TARGET_PROTOCOL)
    clock.lap("source corpus and model")
    with routed(log, verbose):
        tutorial = tutorial_fine_tune(
            segmentation, target_data, budget.tutorial_epochs, output.resolve() / "tutorial.ckpt"
        )
    clock.lap("B0 fine-tuning (tutorial recipe)")
    document = demo_spec(target.resolve(), models, budget)
    (output / "demo.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    tuning = LocalTuning(
        parse_tuning(document, str(output / "demo.yaml")), output / "run", verbose=verbose
    )
    summary = tuning.run()
    clock.lap("C tuning and the A0 and C test evaluations")
    best = tuning.study.best()
    tuned = tuning.study.evaluation(evaluation_name(best.name, "test")) if best else None
    defaults = tuning.study.evaluation(evaluation_name(DEFAULTS, "test"))
    if (
        best is None
        or tuned is None
        or defaults is None
        or tuned.scores is None
        or defaults.scores is None
    ):
        print(f"diartune demo: the tuning ended {summary.phase}: {summary.message}")
        return 1
    scores = output.resolve() / "scores"
    with routed(log, verbose):
        b0 = score_defaults("tutorial-test", tutorial, embedding, target_data, scores / "B0")
        home = score_defaults(
            "source-test", segmentation, embedding, source_data, scores / "source"
        )
    clock.lap("B0 and source-domain test evaluations")
    if tuned.components is None or defaults.components is None or b0.scores is None:
        print("diartune demo: an arm has no per-file scores")
        return 1
    speakers = file_speakers(target, TARGET_PROTOCOL, defaults.scores)
    count = len({name for file in speakers for name in file})
    print(
        f"\nems test subset: {len(speakers)} files, {count} speakers none of the models heard; "
        "DER with 95 % intervals from a bootstrap over speakers and files"
    )
    print(_row("A0 source model, defaults", defaults.scores, defaults.components, speakers))
    print(_row("B0 tutorial fine-tuning, defaults", b0.scores, b0.components, speakers))
    print(_row(f"C  diartune ({best.name})", tuned.scores, tuned.components, speakers))
    print(_gain("C vs A0", tuned.scores, defaults.scores, speakers))
    print(_gain("C vs B0", tuned.scores, b0.scores, speakers))
    print(_gain("B0 vs A0", b0.scores, defaults.scores, speakers))
    if home.scores is not None:
        at_home = file_speakers(Path(source_data.database), SOURCE_PROTOCOL, home.scores)
        print(
            _row("source model on source test", home.scores, home.components, at_home)
            + f" ({len(at_home)} files)"
        )
    print(f"demo wall time: {time.monotonic() - clock.start:.0f} s")
    return 0
