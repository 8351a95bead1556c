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

The multi-fidelity facade (the same surrogate; Hyperband or successive halving over the
stage's budget) runs the same way, with each proposal's budget. A rebuilt tuner tells
SMAC the finished trials first: its intensifier then puts their configurations in its
first bracket and promotes from their results, without running them again.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ConfigSpace import Configuration
from smac import HyperparameterOptimizationFacade, MultiFidelityFacade, Scenario
from smac.acquisition.maximizer.local_search import LocalSearch
from smac.facade.abstract_facade import AbstractFacade
from smac.intensifier.abstract_intensifier import AbstractIntensifier
from smac.intensifier.successive_halving import SuccessiveHalving
from smac.main.config_selector import ConfigSelector
from smac.model.random_forest import RandomForest
from smac.runhistory.dataclasses import TrialInfo, TrialValue
from smac.runhistory.enumerations import StatusType

from diartune.search.space import all_configurations, plain, stage_space
from diartune.spec.model import Budget, Optimizer, Stage
from diartune.spec.params import Value, canonical

# SMAC cannot model an infinite cost (its random forest sees NaN), so a failed trial
# costs as much as the worst DER seen, and at least this.
MIN_CRASH_COST = 1.0
_MAX_DUPLICATE_ASKS = 20
# SMAC's progress (initial designs, incumbents) is no news for diartune's users: its
# warnings only. Its facades are told not to configure logging (logging_level=False):
# theirs is a dictConfig that replaces the root logger's handlers, which would turn the
# operator's JSON log lines back into text and drop its info lines.
logging.getLogger("smac").setLevel(logging.WARNING)
#: Called with the seconds each configuration took SMAC to propose (the operator's metrics).
ASK_OBSERVERS: list[Callable[[float], None]] = []


class SpaceExhausted(Exception):
    """Every configuration of the stage's search space is pending or finished."""


@dataclass(frozen=True)
class Proposal:
    """A configuration to run, at a budget (multi-fidelity) or at full cost (None)."""

    params: dict[str, Value]
    budget: float | None = None


@dataclass(frozen=True)
class Observation:
    """A finished trial as SMAC sees it; ``cost=None`` means it failed."""

    params: dict[str, Value]
    cost: float | None
    budget: float | None = None


Key = tuple[tuple[tuple[str, str], ...], float | None]


def _key(params: dict[str, Value], budget: float | None = None) -> Key:
    return tuple(sorted((name, repr(canonical(value))) for name, value in params.items())), budget


class _OrderedLocalSearch(LocalSearch):
    """SMAC's local search, one change: its start points come in a fixed order. SMAC drops
    duplicates through a set, whose order follows Python's per-process string hashing
    (PYTHONHASHSEED): with a categorical parameter, the same seed proposed different
    configurations in two processes."""

    def _get_initial_points(self, *args: Any, **kwargs: Any) -> list[Configuration]:
        points = super()._get_initial_points(*args, **kwargs)
        return sorted(points, key=lambda config: tuple(np.nan_to_num(config.get_array(), nan=-1)))


class _FastParts:
    """Parts of SMAC's facades, same model and same method: two made faster
    (``bench/scale.py`` measured them), one made reproducible."""

    @staticmethod
    def get_acquisition_maximizer(scenario: Scenario, **options: Any) -> Any:
        """The facades' local and random search, its local search in a fixed order."""
        maximizer = HyperparameterOptimizationFacade.get_acquisition_maximizer(scenario, **options)
        maximizer._local_search.__class__ = _OrderedLocalSearch  # same state, one method
        return maximizer

    @staticmethod
    def get_model(scenario: Scenario, **options: Any) -> RandomForest:
        """The facades' random forest, predicting in the calling thread, grown depth-first.

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
        """The facades' configuration selector, with the incumbent predicted in one batch."""
        return _BatchedConfigSelector(
            scenario, retrain_after=retrain_after, max_new_config_tries=retries
        )


class _HPOFacade(_FastParts, HyperparameterOptimizationFacade):
    """SMAC's HPO facade: Sobol design, random forest, log EI."""


class _MultiFidelityFacade(_FastParts, MultiFidelityFacade):
    """SMAC's multi-fidelity facade: the HPO facade's surrogate, Hyperband's budgets."""


def _scenario(stage: Stage, optimizer: Optimizer, budget: Budget | None, folder: str) -> Scenario:
    """The SMAC scenario of a stage: deterministic (a trial's seeds are fixed by the spec,
    so one seed per configuration), with the stage's budgets when multi-fidelity."""
    return Scenario(
        stage_space(stage, optimizer.seed),
        name=stage.name,
        output_directory=Path(folder),
        deterministic=True,
        n_trials=max(stage.max_trial_count, optimizer.initial_design_size + 1),
        seed=optimizer.seed,
        min_budget=budget.min_budget if budget else None,
        max_budget=budget.max_budget if budget else None,
    )


def _facade(scenario: Scenario, optimizer: Optimizer, done: set[Key]) -> AbstractFacade:
    """The facade the spec names, starting from pyannote's defaults: then Sobol points
    (hpo) or random ones (multiFidelity) that did not run yet."""
    space = scenario.configspace
    default = space.get_default_configuration()
    size = optimizer.initial_design_size
    if optimizer.facade == "hpo":
        sobol = (
            _HPOFacade.get_initial_design(
                scenario, n_configs=size, max_ratio=1.0
            ).select_configurations()[:size]
            if size
            else []
        )
        remaining = [c for c in [default, *sobol] if _key(plain(c)) not in done]
        return _HPOFacade(
            scenario,
            target_function=None,  # pure ask/tell
            initial_design=_HPOFacade.get_initial_design(
                scenario, n_configs=0, additional_configs=remaining
            ),
            intensifier=_HPOFacade.get_intensifier(scenario, max_config_calls=1),
            overwrite=True,
            logging_level=False,
        )
    intensifier: AbstractIntensifier
    if optimizer.intensifier == "hyperband":
        intensifier = _MultiFidelityFacade.get_intensifier(scenario, eta=optimizer.eta)
    else:
        intensifier = SuccessiveHalving(
            scenario, eta=optimizer.eta, incumbent_selection="highest_observed_budget"
        )
    return _MultiFidelityFacade(
        scenario,
        target_function=None,
        initial_design=_MultiFidelityFacade.get_initial_design(
            scenario, n_configs=size, additional_configs=[default]
        ),
        intensifier=intensifier,
        overwrite=True,
        logging_level=False,
    )


class StageTuner:
    """Asks SMAC for configurations of one stage (and their budgets) and tells it their cost."""

    def __init__(
        self,
        stage: Stage,
        optimizer: Optimizer,
        budget: Budget | None = None,
        finished: Iterable[Observation] = (),
        pending: Iterable[Proposal] = (),
    ) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix="diartune-smac-")
        scenario = _scenario(stage, optimizer, budget, self._workdir.name)
        self.space = scenario.configspace
        # A multi-fidelity stage runs a configuration at several budgets: only SMAC
        # knows when it has no new one.
        self._size = stage.size if budget is None else math.inf
        self._min_budget = budget.min_budget if budget else None
        finished = list(finished)
        self._seen = {_key(o.params, o.budget) for o in finished}
        self._seen |= {_key(p.params, p.budget) for p in pending}
        self._asked: dict[Key, TrialInfo] = {}
        self._smac = _facade(scenario, optimizer, self._seen)
        self._ask_ahead = budget is None  # rungs wait for tells: asking ahead opens brackets
        self._worst = MIN_CRASH_COST
        self._lock = threading.Lock()  # SMAC is not thread-safe
        self._ready: deque[Proposal] = deque()
        self._told: deque[Observation] = deque()
        for observation in finished:
            self._tell_smac(observation)

    def ask(self) -> Proposal:
        """A configuration and budget that is neither pending nor finished: a prepared one
        if any. Raises SpaceExhausted when there is none left."""
        try:
            return self._ready.popleft()
        except IndexError:
            with self._lock:
                self._flush_tells()
                return self._ask_smac()

    def prepare(self, count: int) -> None:
        """Ask SMAC now for up to ``count`` configurations, for the next ``ask`` calls
        (not with budgets: Hyperband's promotions depend on the tells before them)."""
        if not self._ask_ahead:
            return
        with self._lock:
            self._flush_tells()
            while len(self._ready) < count and len(self._seen) < self._size:
                self._ready.append(self._ask_smac())

    def tell(self, observation: Observation) -> None:
        """Record a finished trial (told to SMAC before its next ask)."""
        self._told.append(observation)

    def _flush_tells(self) -> None:
        while self._told:
            self._tell_smac(self._told.popleft())

    def _ask_smac(self) -> Proposal:
        start = time.perf_counter()
        try:
            return self._propose()
        finally:
            for observe in ASK_OBSERVERS:
                observe(time.perf_counter() - start)

    def _propose(self) -> Proposal:
        if len(self._seen) >= self._size:
            raise SpaceExhausted(f"all {self._size:.0f} configurations of the space were tried")
        for _ in range(_MAX_DUPLICATE_ASKS):
            try:
                info = self._smac.ask()
            except StopIteration:  # SMAC's own generators ran dry in a small space
                break
            proposal = Proposal(plain(info.config), info.budget)
            key = _key(proposal.params, proposal.budget)
            self._asked.setdefault(key, info)  # a restored pending trial's tell uses it
            if key not in self._seen:
                self._seen.add(key)
                return proposal
        # The surrogate keeps proposing known points: take one it has not proposed.
        if math.isfinite(self._size):
            candidates: Iterable[dict[str, Value]] = all_configurations(self.space)
        else:
            candidates = map(plain, self.space.sample_configuration(_MAX_DUPLICATE_ASKS))
        for params in candidates:
            if _key(params, self._min_budget) not in self._seen:
                self._seen.add(_key(params, self._min_budget))
                return Proposal(params, self._min_budget)
        raise SpaceExhausted("SMAC found no configuration that was not tried")

    def _tell_smac(self, observation: Observation) -> None:
        key = _key(observation.params, observation.budget)
        self._seen.add(key)
        info = self._asked.pop(key, None)
        if info is None:  # a trial of an earlier tuner, restored
            config = Configuration(self.space, values=observation.params)
            info = TrialInfo(config, seed=0, budget=observation.budget)
        if observation.cost is None:
            value = TrialValue(cost=self._worst, status=StatusType.CRASHED)
        else:
            self._worst = max(self._worst, observation.cost)
            value = TrialValue(cost=observation.cost, status=StatusType.SUCCESS)
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
