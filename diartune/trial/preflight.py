"""What every trial of a tuning would refuse about its models, checked once before any runs."""

from __future__ import annotations

import os
from typing import cast

from pyannote.audio import Model

from diartune.corpus import BadInput
from diartune.spec.model import Spec
from diartune.storage import Storage, cache_root
from diartune.trial.models import load_model
from diartune.trial.plda import load_plda

#: The parameter that only segmentation models that are not powerset have.
THRESHOLD = "segmentation.threshold"


def check_models(spec: Spec) -> None:
    """Raise BadInput, naming the field or file, for what every trial would refuse about the
    models: ``segmentation.threshold`` tuned with a powerset segmentation model, or a
    ``spec.pipeline.plda`` that does not fit the embedding.

    Each trial checks the same first (a trial that found it would exit as bad input);
    ``diartune tune`` calls this before its first trial, ``diartune validate --models``
    on request. A model is loaded only when a check needs it; downloads land in the
    trials' cache, so they are not fetched twice.
    """
    storage = Storage(spec.data.s3)
    token = os.environ.get("HF_TOKEN")
    _check_threshold(spec, storage, token)
    pipeline = spec.pipeline
    if pipeline.plda is None:
        return
    embedding = _load("embedding", pipeline.embedding, storage, token)
    load_plda(pipeline.plda, storage, cache_root(), cast(int, embedding.dimension), token)


def _check_threshold(spec: Spec, storage: Storage, token: str | None) -> None:
    """BadInput when a stage tunes ``segmentation.threshold`` of a powerset model."""
    where = [index for index, stage in enumerate(spec.stages) if THRESHOLD in stage.search_space]
    if not where:
        return
    # Imported here: pyannote's pipelines take seconds to import, and only this needs them.
    from diartune.trial.pipeline import is_powerset

    if is_powerset(_load("segmentation", spec.pipeline.segmentation, storage, token)):
        raise BadInput(
            f"spec.stages[{where[0]}].searchSpace.{THRESHOLD}: {spec.pipeline.segmentation} "
            "is a powerset segmentation model, which has no threshold; expected a model that "
            f"is not powerset, or no {THRESHOLD}"
        )


def _load(field: str, uri: str, storage: Storage, token: str | None) -> Model:
    """The model at ``uri``, given as ``spec.pipeline.<field>``; BadInput naming the field
    when it is missing."""
    try:
        return load_model(uri, storage, cache_root(), token)
    except FileNotFoundError as error:
        raise BadInput(f"spec.pipeline.{field}: {error}") from error
