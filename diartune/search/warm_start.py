"""Warm start: the trials of earlier tunings, told to SMAC before a stage's first ask.

The rule (``spec.optimizer.warmStartFrom``, docs/spec.md): a successful search trial of
an earlier tuning is imported into the stage **of the same name** when

- that stage searches exactly the same parameters (a parameter searched in one and not
  the other is refused by name: its DER was measured with another value of it), and
- its values lie inside this stage's search space (bounds and choices may have changed:
  trials outside them are skipped, and counted).

Failed trials and evaluations are not imported; nor are trials with a budget (the HPO
facade only: a multi-fidelity rung is only meaningful within its own bracket). Imported
trials do not count against ``maxTrialCount``; the tuning's own trials never repeat one.
What the earlier tuning fixed outside its search space (data, models, other stages'
parameters) is taken on trust: warm start from tunings of the same problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ConfigSpace import Configuration

from diartune.records import TrialRecord
from diartune.search.space import stage_space
from diartune.spec.model import Spec, SpecError


@dataclass(frozen=True)
class WarmStart:
    """The trials imported into each stage, and how many were skipped."""

    imported: dict[str, list[TrialRecord]] = field(default_factory=dict)
    skipped: int = 0

    @property
    def count(self) -> int:
        """How many trials were imported, over all stages."""
        return sum(len(records) for records in self.imported.values())


def _usable(record: TrialRecord) -> bool:
    return (
        record.state == "Succeeded"
        and not record.is_evaluation
        and record.objective is not None
        and record.budget is None
    )


def warm_start(spec: Spec, sources: Sequence[tuple[str, Iterable[TrialRecord]]]) -> WarmStart:
    """The trials of ``sources`` (a name for messages, its records) that ``spec`` imports.

    Raises SpecError naming ``spec.optimizer.warmStartFrom[i]``, the stage and the
    parameter when an earlier stage searched other parameters than this one.
    """
    imported: dict[str, list[TrialRecord]] = {}
    skipped = 0
    stages = {stage.name: stage for stage in spec.stages}
    spaces = {stage.name: stage_space(stage, spec.optimizer.seed) for stage in spec.stages}
    for index, (source, records) in enumerate(sources):
        where = f"spec.optimizer.warmStartFrom[{index}] ({source})"
        for record in filter(_usable, records):
            stage = stages.get(record.stage)
            if stage is None:
                continue
            searched, earlier = set(stage.search_space), set(record.params)
            for name in sorted(earlier ^ searched):
                side = "this stage does not search it" if name in earlier else "it did not"
                raise SpecError(
                    f"{where}: stage {stage.name!r}: parameter {name!r}: {side}; expected "
                    "a tuning whose stage searches the same parameters"
                )
            try:
                Configuration(spaces[stage.name], values=record.params)
            except (ValueError, KeyError):  # outside the bounds or choices of this space
                skipped += 1
                continue
            imported.setdefault(stage.name, []).append(record)
    return WarmStart(imported, skipped)
