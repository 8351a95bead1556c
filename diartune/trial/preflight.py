"""What every trial of a tuning would refuse about its models, checked once before any runs."""

from __future__ import annotations

import os
from typing import cast

from diartune.corpus import BadInput
from diartune.spec.model import Spec
from diartune.storage import Storage, cache_root
from diartune.trial.models import load_model
from diartune.trial.plda import load_plda


def check_models(spec: Spec) -> None:
    """Raise BadInput, naming the file, when ``spec.pipeline.plda`` does not fit the embedding.

    Each trial checks the same first (a trial that found it would exit as bad input);
    ``diartune tune`` calls this before its first trial, ``diartune validate --models``
    on request. Downloads land in the trials' cache, so they are not fetched twice.
    """
    pipeline = spec.pipeline
    if pipeline.plda is None:
        return
    storage = Storage(spec.data.s3)
    token = os.environ.get("HF_TOKEN")
    try:
        embedding = load_model(pipeline.embedding, storage, cache_root(), token)
    except FileNotFoundError as error:
        raise BadInput(f"spec.pipeline.embedding: {error}") from error
    load_plda(pipeline.plda, storage, cache_root(), cast(int, embedding.dimension), token)
