"""The status of a DiarizationTuning: phase, counts, best trial and conditions.

It is rebuilt whole from the study at every change and holds no per-trial list, so
its size does not grow with the number of trials (the DiarizationTrials keep them).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from diartune.records import TrialRecord
from diartune.study import Study

CONDITION_TYPES = ("Created", "Running", "Succeeded", "Failed", "SpecRejected")
TERMINAL_PHASES = ("Succeeded", "Failed")
MAX_MESSAGE = 1024


def now() -> str:
    """The current time as Kubernetes writes it."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Conditions:
    """The conditions of a tuning, one per type, keeping their last transition times."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, status: dict[str, Any] | None) -> Conditions:
        """The conditions found in a stored status."""
        found = (status or {}).get("conditions") or []
        return cls({item["type"]: dict(item) for item in found if item.get("type")})

    def set(self, kind: str, status: bool, reason: str, message: str, generation: int) -> bool:
        """Set a condition; return whether its status changed (a transition)."""
        value = "True" if status else "False"
        before = self.items.get(kind)
        changed = before is None or before.get("status") != value
        self.items[kind] = {
            "type": kind,
            "status": value,
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "lastTransitionTime": now() if changed else before["lastTransitionTime"],  # type: ignore[index]
            "observedGeneration": generation,
        }
        return changed

    def is_true(self, kind: str) -> bool:
        """Whether condition ``kind`` is there and True."""
        return self.items.get(kind, {}).get("status") == "True"

    def as_list(self) -> list[dict[str, Any]]:
        """The conditions in a stable order."""
        return [self.items[kind] for kind in CONDITION_TYPES if kind in self.items]


def best_trial(record: TrialRecord, resource_name: str) -> dict[str, Any]:
    """The best trial as the status shows it."""
    return {
        "name": resource_name,
        "stage": record.stage,
        "der": record.der,
        "components": record.components.model_dump(by_alias=True) if record.components else None,
        "params": record.full_params,
        "artifacts": record.artifacts,
        "checkpoint": record.checkpoint,
    }


def tuning_status(
    study: Study,
    phase: str,
    stage: str | None,
    conditions: Conditions,
    generation: int,
    best_name: str | None = None,
    test: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole status of a tuning, bounded in size whatever its number of trials."""
    done = len(study.records)
    total = sum(stage.max_trial_count for stage in study.spec.stages)
    best = study.best()
    status: dict[str, Any] = {
        "phase": phase,
        "stage": stage,
        "trialsDone": done,
        "trialsRunning": len(study.running),
        "trialsFailed": study.failed_count,
        "maxTrials": total,
        "progress": f"{done}/{total}",
        "bestDer": best.der if best else None,
        "bestTrial": best_trial(best, best_name or best.name) if best else None,
        "conditions": conditions.as_list(),
        "observedGeneration": generation,
    }
    return status | (test or {})
