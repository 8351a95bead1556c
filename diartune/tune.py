"""``diartune tune spec.yaml``: the SMAC loop with trials as local processes.

The output folder is the durable state: rerunning the same command resumes, and
finished trials are never run again. Ctrl-C stops the running trials cleanly.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from diartune.executors.local import LocalExecutor, Outcome
from diartune.records import TrialRecord
from diartune.report import load_records, plot, save_best, save_records, write_summary
from diartune.spec import DiarizationTuning, SpecError
from diartune.storage import is_s3, join
from diartune.study import (
    PlannedTrial,
    Study,
    evaluation_request,
    trial_record,
    trial_request,
)


def _check_same_tuning(folder: Path, tuning: DiarizationTuning) -> None:
    saved = folder / "spec.json"
    fixed = tuning.spec.fixed_part()
    if saved.exists() and json.loads(saved.read_text("utf-8")) != fixed:
        raise SpecError(
            f"{folder} holds a tuning with another spec; only parallelTrialCount, "
            "maxTrialCount, maxFailedTrialCount and suspend may change on resume. "
            "Use another --output."
        )
    saved.write_text(json.dumps(fixed, indent=2, ensure_ascii=False))


class LocalTuning:
    """One tuning run on this machine."""

    def __init__(self, tuning: DiarizationTuning, folder: Path, console: Console | None = None):
        self.tuning = tuning
        self.spec = tuning.spec
        self.folder = folder
        self.console = console or Console(stderr=True)
        folder.mkdir(parents=True, exist_ok=True)
        _check_same_tuning(folder, tuning)
        self.root = self.spec.artifacts or str(folder.resolve())
        self.study = Study(self.spec, load_records(folder))
        self.executor = LocalExecutor(folder / "logs")

    def run(self) -> dict[str, Any]:
        """Run trials until the stages are done (or the tuning fails); return the summary."""
        start = time.monotonic()
        total = sum(stage.max_trial_count for stage in self.spec.stages)
        if self.study.records:
            self.console.print(f"resuming: {len(self.study.records)} trials already finished")
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best DER {task.fields[best]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console) as progress:
            task = progress.add_task(
                self.tuning.metadata.name,
                total=total,
                completed=len(self.study.records),
                best=self._best_text(),
            )
            try:
                self._loop(progress, task)
            except BaseException:
                self.executor.stop_all()
                raise
        return self.finish(time.monotonic() - start)

    def _best_text(self) -> str:
        best = self.study.best()
        return f"{100 * best.der:.2f} %" if best and best.der is not None else "-"

    def _loop(self, progress: Progress, task: Any) -> None:
        planned: dict[str, PlannedTrial] = {}
        while True:
            for trial in self.study.plan():
                planned[trial.name] = trial
                self.executor.start(trial_request(self.spec, trial, self.root))
            if not self.executor.running:
                return
            outcome = self.executor.wait()
            record = self._record(planned.pop(outcome.name), outcome)
            self.study.record(record)
            save_records(self.folder, self.study.records)
            progress.update(task, advance=1, best=self._best_text())
            state = f"DER {100 * record.der:.2f} %" if record.der is not None else record.message
            progress.console.print(f"{record.name}: {record.state}: {state}")

    @staticmethod
    def _record(trial: PlannedTrial, outcome: Outcome) -> TrialRecord:
        return trial_record(
            trial, outcome.result, outcome.error, outcome.bad_input, round(outcome.seconds, 2)
        )

    def _evaluate_on_test(self, record: TrialRecord, name: str, export: bool) -> Outcome:
        self.executor.start(evaluation_request(self.spec, record, name, self.root, export))
        return self.executor.wait()

    def finish(self, seconds: float) -> dict[str, Any]:
        """Write the plot, best configuration, exported pipeline and summary."""
        records = self.study.records
        stages = [stage.name for stage in self.spec.stages]
        plot(self.folder, records, stages)
        best = self.study.best()
        first = next((r for r in records if r.stage == stages[0] and r.number == 0), None)
        summary: dict[str, Any] = {
            "tuning": self.tuning.metadata.name,
            "phase": "Failed" if self.study.failure else "Succeeded",
            "message": self.study.failure,
            "trials": len(records),
            "failed": self.study.failed_count,
            "defaultDer": first.der if first else None,
            "bestDer": best.der if best else None,
            "bestTrial": best.name if best else None,
            "bestParams": best.full_params if best else None,
            "seconds": seconds,
        }
        if best is not None and first is not None and not self.study.failure:
            save_best(self.folder, best)
            summary |= self._test_summary(best, first)
        self.console.print(write_summary(self.folder, summary))
        return summary

    def _test_summary(self, best: TrialRecord, default: TrialRecord) -> dict[str, Any]:
        """Score the winner (and, for comparison, the defaults) once on the test subset."""
        saved = self.folder / "summary.json"
        if saved.exists():
            before = json.loads(saved.read_text("utf-8"))
            if before.get("bestTrial") == best.name and before.get("testDer") is not None:
                keys = ("testDer", "testComponents", "defaultTestDer", "pipeline")
                return {key: before.get(key) for key in keys}
        outcome = self._evaluate_on_test(best, "test-best", export=True)
        if outcome.result is None:
            return {"testDer": None, "message": f"test evaluation failed: {outcome.error}"}
        exported = join(outcome.result["artifacts"], "pipeline")
        if not is_s3(exported):
            shutil.rmtree(self.folder / "pipeline", ignore_errors=True)
            shutil.copytree(exported, self.folder / "pipeline")
            exported = str(self.folder / "pipeline")
        baseline = self._evaluate_on_test(default, "test-default", export=False)
        return {
            "testDer": outcome.result["der"],
            "testComponents": outcome.result["components"],
            "defaultTestDer": baseline.result["der"] if baseline.result else None,
            "pipeline": exported,
        }
