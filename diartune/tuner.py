"""SMAC3 ask/tell for one stage, with no Kubernetes and no processes in it.

The HPO facade (Sobol initial design, random-forest surrogate, log expected
improvement) runs with pure ask/tell. Its design is built here so that:

- pyannote's defaults come first (the warm start), then the Sobol points;
- a tuner rebuilt from finished trials skips the design points already run
  (SMAC's tells do not consume its initial design);
- no configuration that is pending or finished is handed out twice;
- configurations can be asked ahead (``prepare``, from a worker thread), so that a
  freed slot gets its next trial without waiting for SMAC: its retrains take seconds
  after hundreds of trials. Tells are queued and reach SMAC before its next ask.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from ConfigSpace import Configuration
from smac import HyperparameterOptimizationFacade, Scenario
from smac.main.config_selector import ConfigSelector
from smac.model.random_forest import RandomForest
from smac.runhistory.dataclasses import TrialInfo, TrialValue
from smac.runhistory.enumerations import StatusType

from diartune.params import Value, canonical
from diartune.space import all_configurations, plain, stage_space
from diartune.spec import Optimizer, Stage

# SMAC cannot model an infinite cost (its random forest sees NaN), so a failed trial
# costs as much as the worst DER seen, and at least this.
MIN_CRASH_COST = 1.0
_MAX_DUPLICATE_ASKS = 20
#: Called with the seconds each configuration took SMAC to propose (the operator's metrics).
ASK_OBSERVERS: list[Callable[[float], None]] = []


class SpaceExhausted(Exception):
    """Every configuration of the stage's search space is pending or finished."""


def _key(params: dict[str, Value]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, repr(canonical(value))) for name, value in params.items()))


class _Facade(HyperparameterOptimizationFacade):
    """SMAC's HPO facade (Sobol design, random forest, log EI) with two of its parts
    made faster, same model and same method; ``bench/scale.py`` measured them."""

    @staticmethod
    def get_model(scenario: Scenario, **options: Any) -> RandomForest:
        """The facade's random forest, predicting in the calling thread, grown depth-first.

        SMAC predicts one row at a time in places: with its ``n_jobs=-1`` each call paid
        joblib's thread-pool round trip (~15 ms). sklearn sizes a best-first tree for
        SMAC's 2**20-leaf cap, which no tree reaches: depth-first (no cap) grows the same
        fully grown trees 10x faster.
        """
        model = HyperparameterOptimizationFacade.get_model(scenario, **options)
        model._rf_opts.update(n_jobs=1, max_leaf_nodes=None)  # options get_model does not take
        return model

    @staticmethod
    def get_config_selector(
        scenario: Scenario, *, retrain_after: int = 8, retries: int = 16
    ) -> ConfigSelector:
        """The facade's configuration selector, with the incumbent predicted in one batch."""
        return _BatchedConfigSelector(
            scenario, retrain_after=retrain_after, max_new_config_tries=retries
        )


class StageTuner:
    """Asks SMAC for configurations of one stage and tells it their DER."""

    def __init__(
        self,
        stage: Stage,
        optimizer: Optimizer,
        finished: Iterable[tuple[dict[str, Value], float | None]] = (),
        pending: Iterable[dict[str, Value]] = (),
    ) -> None:
        self.space = stage_space(stage, optimizer.seed)
        self._size = stage.size
        finished = list(finished)
        self._seen = {_key(params) for params, _ in finished} | {_key(p) for p in pending}
        self._asked: dict[tuple[tuple[str, str], ...], TrialInfo] = {}
        self._workdir = tempfile.TemporaryDirectory(prefix="diartune-smac-")
        scenario = Scenario(
            self.space,
            name=stage.name,
            output_directory=Path(self._workdir.name),
            deterministic=True,
            n_trials=max(stage.max_trial_count, optimizer.initial_design_size + 1),
            seed=optimizer.seed,
        )
        sobol = _Facade.get_initial_design(
            scenario, n_configs=optimizer.initial_design_size, max_ratio=1.0
        ).select_configurations()[: optimizer.initial_design_size]
        design = [self.space.get_default_configuration(), *sobol]
        remaining = [c for c in design if _key(plain(c)) not in self._seen]
        self._smac = _Facade(
            scenario,
            target_function=None,  # pure ask/tell
            initial_design=_Facade.get_initial_design(
                scenario, n_configs=0, additional_configs=remaining
            ),
            intensifier=_Facade.get_intensifier(scenario, max_config_calls=1),
            overwrite=True,
            logging_level=logging.WARNING,
        )
        self._worst = MIN_CRASH_COST
        self._lock = threading.Lock()  # SMAC is not thread-safe
        self._ready: deque[dict[str, Value]] = deque()
        self._told: deque[tuple[dict[str, Value], float | None]] = deque()
        for params, der in finished:
            self._tell_smac(params, der)

    def ask(self) -> dict[str, Value]:
        """A configuration that is neither pending nor finished: a prepared one if any.

        Raises SpaceExhausted when there is none left.
        """
        try:
            return self._ready.popleft()
        except IndexError:
            with self._lock:
                self._flush_tells()
                return self._ask_smac()

    def prepare(self, count: int) -> None:
        """Ask SMAC now for up to ``count`` configurations, for the next ``ask`` calls."""
        with self._lock:
            self._flush_tells()
            while len(self._ready) < count and len(self._seen) < self._size:
                self._ready.append(self._ask_smac())

    def tell(self, params: dict[str, Value], der: float | None) -> None:
        """Record a finished trial; ``der=None`` means it failed (told as crashed)."""
        self._told.append((params, der))

    def _flush_tells(self) -> None:
        while self._told:
            self._tell_smac(*self._told.popleft())

    def _ask_smac(self) -> dict[str, Value]:
        start = time.perf_counter()
        try:
            return self._propose()
        finally:
            for observe in ASK_OBSERVERS:
                observe(time.perf_counter() - start)

    def _propose(self) -> dict[str, Value]:
        if len(self._seen) >= self._size:
            raise SpaceExhausted(f"all {self._size:.0f} configurations of the space were tried")
        for _ in range(_MAX_DUPLICATE_ASKS):
            try:
                info = self._smac.ask()
            except StopIteration:  # SMAC's own generators ran dry in a small space
                break
            params = plain(info.config)
            if _key(params) not in self._seen:
                self._seen.add(_key(params))
                self._asked[_key(params)] = info
                return params
        # The surrogate keeps proposing known points: take one it has not proposed.
        if math.isfinite(self._size):
            candidates: Iterable[dict[str, Value]] = all_configurations(self.space)
        else:
            candidates = map(plain, self.space.sample_configuration(_MAX_DUPLICATE_ASKS))
        for params in candidates:
            if _key(params) not in self._seen:
                self._seen.add(_key(params))
                return params
        raise SpaceExhausted("SMAC found no configuration that was not tried")

    def _tell_smac(self, params: dict[str, Value], der: float | None) -> None:
        self._seen.add(_key(params))
        info = self._asked.pop(_key(params), None)
        if info is None:  # a trial of an earlier tuner, restored
            info = TrialInfo(Configuration(self.space, values=params), seed=0)
        if der is None:
            value = TrialValue(cost=self._worst, status=StatusType.CRASHED)
        else:
            self._worst = max(self._worst, der)
            value = TrialValue(cost=der, status=StatusType.SUCCESS)
        self._smac.tell(info, value, save=False)


class _BatchedConfigSelector(ConfigSelector):
    """SMAC's configuration selector (the HPO facade's settings), one change: the
    incumbent's predicted cost comes from one batched prediction instead of one
    prediction per evaluated configuration (5.7 s per retrain at 1,000 trials). Same
    model, same rows, same minimum (the first one on ties, as SMAC's stable sort)."""

    def _get_x_best(self, X: np.ndarray) -> tuple[np.ndarray, float]:
        assert self._model is not None
        means, _ = self._model.predict_marginalized(X)
        best = int(np.argmin(means[:, 0]))
        return X[best], float(means[best, 0])
