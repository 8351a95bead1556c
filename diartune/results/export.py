"""``diartune export``: a tuning as Optuna studies in a journal file, for optuna-dashboard.

Each stage becomes one study (``<tuning>/<stage>``, minimize): stages search different
spaces, and a stage's trials all start from the same earlier best, so only within a
stage do parameters and DER compare. Each search trial becomes an Optuna trial with the
stage's parameters (their distributions from the spec's search space), its development
DER as the value, and its state (Succeeded: COMPLETE, Failed: FAIL); its stage, DER
components, DER per file and, when it failed, why, are user attributes. Evaluations
(number -1, not trials of the search) and the tuning's summary are user attributes of
every study.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState, create_trial

from diartune.records import Components, TrialRecord
from diartune.results.artifacts import ArtifactsError, TuningArtifacts
from diartune.spec.model import CategoricalParameter, FloatParameter, IntParameter, Stage
from diartune.spec.params import Value
from diartune.storage import atomic_path


def distribution(
    parameter: FloatParameter | IntParameter | CategoricalParameter,
) -> BaseDistribution:
    """The Optuna distribution of a search-space parameter of the spec."""
    if isinstance(parameter, CategoricalParameter):
        return CategoricalDistribution(parameter.choices)
    if isinstance(parameter, IntParameter):
        return IntDistribution(parameter.low, parameter.high, log=parameter.log)
    return FloatDistribution(parameter.low, parameter.high, log=parameter.log)


def trial_attributes(record: TrialRecord, per_file: dict[str, Components]) -> dict[str, Value]:
    """What Optuna has no field for: the trial's identity, state, DER parts and files."""
    parts = record.components
    attributes: dict[str, Value | None] = {
        "trial": record.name,
        "stage": record.stage,
        "state": record.state,
        "segmentation": record.checkpoint or record.segmentation,
        "seconds": record.seconds,
        "message": record.message,
        "badInput": record.bad_input or None,
    }
    if parts is not None:
        attributes |= parts.model_dump(by_alias=True, exclude={"der"})
    attributes |= {f"der/{uri}": file.der for uri, file in sorted(per_file.items())}
    return {key: value for key, value in attributes.items() if value is not None}


def frozen_trial(record: TrialRecord, stage: Stage, per_file: dict[str, Components]) -> FrozenTrial:
    """A search trial's record as an Optuna trial of its stage's study."""
    if set(record.params) != set(stage.search_space):
        raise ArtifactsError(
            f"trial {record.name}: parameters {sorted(record.params)} are not those of "
            f"stage {stage.name}'s searchSpace {sorted(stage.search_space)}"
        )
    succeeded = record.state == "Succeeded" and record.der is not None
    try:
        return create_trial(
            state=TrialState.COMPLETE if succeeded else TrialState.FAIL,
            value=record.der if succeeded else None,
            params=dict(record.params),
            distributions={
                name: distribution(parameter) for name, parameter in stage.search_space.items()
            },
            user_attrs=trial_attributes(record, per_file),
        )
    except ValueError as error:
        raise ArtifactsError(f"trial {record.name}: {error}") from None


def study_attributes(tuning: TuningArtifacts) -> dict[str, Value]:
    """The tuning's summary and its evaluations (winner and defaults on test)."""
    summary = tuning.summary()
    attributes: dict[str, Value | None] = {
        "tuning": tuning.name,
        "artifacts": tuning.location,
        "phase": str(summary.phase),
        "message": summary.message,
        "bestTrial": summary.best_trial,
        "bestDer": summary.best_der,
        "defaultDer": summary.default_der,
        "testDer": summary.test_der,
        "defaultTestDer": summary.default_test_der,
        "pipeline": summary.pipeline,
    }
    for record in tuning.records:
        if record.is_evaluation:
            outcome = record.der if record.state == "Succeeded" else f"failed: {record.message}"
            attributes[f"evaluation/{record.name}"] = outcome
    return {key: value for key, value in attributes.items() if value is not None}


def study_name(tuning: str, stage: str) -> str:
    """The Optuna study of one stage of a tuning."""
    return f"{tuning}/{stage}"


def export_journal(tuning: TuningArtifacts, path: Path) -> list[str]:
    """Write ``tuning`` as one Optuna study per stage to the journal file ``path``.

    The file is replaced as a whole (written beside it, then renamed): exporting again
    gives the studies as they are now. Returns the studies' names.
    """
    attributes = study_attributes(tuning)
    names = []
    with atomic_path(path) as partial:
        storage = JournalStorage(JournalFileBackend(str(partial)))
        for stage in tuning.spec.stages:
            name = study_name(tuning.name, stage.name)
            study = optuna.create_study(storage=storage, study_name=name, direction="minimize")
            for key, value in (attributes | {"stage": stage.name}).items():
                study.set_user_attr(key, value)
            records = sorted(
                (r for r in tuning.records if r.stage == stage.name and not r.is_evaluation),
                key=lambda r: r.number,
            )
            study.add_trials(
                frozen_trial(r, stage, tuning.per_file.get(r.name, {})) for r in records
            )
            names.append(name)
    return names
