"""Build pyannote's SpeakerDiarization pipeline with a trial's parameters, and run it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from pyannote.audio import Model
from pyannote.audio import __version__ as pyannote_version
from pyannote.audio.core.plda import PLDA
from pyannote.audio.pipelines import SpeakerDiarization
from pyannote.core import Annotation

from diartune.corpus import BadInput
from diartune.spec.params import Value, pipeline_defaults
from diartune.trial.cache import FeatureCache
from diartune.trial.plda import PLDA_FILE, TRANSFORM_FILE, write_inert_plda

#: What exported pipelines name: pyannote's own class, which needs no diartune.
STOCK_PIPELINE = f"{SpeakerDiarization.__module__}.{SpeakerDiarization.__name__}"


class _NoPLDA(PLDA):
    """Stands in for the PLDA that pyannote always loads, where clustering needs none."""

    def __init__(self) -> None:
        pass

    def __call__(self, embeddings: Any) -> Any:
        raise RuntimeError("VBxClustering needs a PLDA: set spec.pipeline.plda")


class OfflineSpeakerDiarization(SpeakerDiarization):
    """pyannote's SpeakerDiarization that loads no PLDA unless one is given: what trials run.

    Exported pipelines name pyannote's own class instead (see :func:`export_pipeline`).
    """

    def __init__(self, plda: Any = None, **kwargs: Any) -> None:
        super().__init__(plda=plda if plda is not None else _NoPLDA(), **kwargs)

    def default_parameters(self) -> dict[str, Any]:
        """pyannote's defaults for this pipeline's own parameters.

        pyannote 4.0 returns VBx's whatever the clustering, which agglomerative
        clustering cannot take (``pyannote-audio optimize`` warm-starts from them).
        """
        return nested(pipeline_params(self, pipeline_defaults(self.klustering)))


def is_powerset(model: Model) -> bool:
    """Whether a segmentation model is powerset (then it has no threshold to tune)."""
    return bool(getattr(model.specifications, "powerset", False))


def nested(params: dict[str, Value]) -> dict[str, dict[str, Value]]:
    """``{"clustering.threshold": 0.7}`` as ``{"clustering": {"threshold": 0.7}}``."""
    result: dict[str, dict[str, Value]] = {}
    for name, value in params.items():
        group, _, key = name.partition(".")
        result.setdefault(group, {})[key] = value
    return result


def pipeline_params(pipeline: SpeakerDiarization, params: dict[str, Value]) -> dict[str, Value]:
    """The pipeline's own parameters among ``params`` (training.* and extras dropped)."""
    accepted = {
        f"{group}.{name}"
        for group, values in pipeline.parameters(instantiated=False).items()
        for name in values
    }
    return {name: value for name, value in params.items() if name in accepted}


def build_pipeline(
    segmentation: Model,
    embedding: Model,
    clustering: str,
    params: dict[str, Value],
    tuned: set[str],
    plda: Any = None,
    batch_sizes: tuple[int, int] = (32, 32),
) -> OfflineSpeakerDiarization:
    """pyannote's SpeakerDiarization pipeline, instantiated with a trial's parameters.

    Parameters
    ----------
    segmentation, embedding
        The models (pyannote ``Model`` instances).
    clustering
        ``AgglomerativeClustering`` or ``VBxClustering``.
    params
        Every parameter of the trial; those the pipeline does not have are left out.
    tuned
        The parameters the stage tunes: one the pipeline lacks is bad input.
    plda
        The PLDA, for VBx clustering.
    batch_sizes
        Segmentation and embedding batch sizes.

    Raises
    ------
    BadInput
        When a tuned parameter does not apply to this pipeline.
    """
    pipeline = OfflineSpeakerDiarization(
        segmentation=segmentation,
        embedding=embedding,
        clustering=clustering,
        plda=plda,
        segmentation_batch_size=batch_sizes[0],
        embedding_batch_size=batch_sizes[1],
    )
    accepted = pipeline_params(pipeline, params)
    unused = sorted(name for name in tuned - set(accepted) if not name.startswith("training."))
    if unused:
        raise BadInput(
            f"spec.stages[].searchSpace: {unused}: the pipeline has no such parameter "
            f"(its segmentation model is {'' if is_powerset(segmentation) else 'not '}"
            "powerset; only models that are not have segmentation.threshold)"
        )
    pipeline.instantiate(nested(accepted))
    return pipeline


# pyannote's hook names a step when it ends; "discrete_diarization" closes clustering.
_STEPS = {"discrete_diarization": "clustering", "speaker_counting": "segmentation"}


class StepTimer:
    """A pyannote pipeline hook that adds each step's seconds into ``timings``."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def __call__(self, step: str, artifact: Any, file: Any = None, **progress: Any) -> None:
        """Called by the pipeline after each step (and during long ones, with progress)."""
        if progress.get("completed") != progress.get("total"):
            return
        now = time.perf_counter()
        name = _STEPS.get(step, step)
        self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now


def diarize(
    pipeline: SpeakerDiarization,
    files: list[dict[str, Any]],
    cache: FeatureCache | None,
    timings: dict[str, float],
) -> dict[str, Annotation]:
    """Run the pipeline on each file, reusing and filling the feature cache.

    Parameters
    ----------
    pipeline
        An instantiated pipeline.
    files
        The files of a subset, decoded (``subset_files``).
    cache
        Segmentations and embeddings from earlier trials, or None.
    timings
        Seconds per pipeline step, added to in place.

    Returns
    -------
    dict
        The hypothesis of each file, by URI.
    """
    pipeline.training = cache is not None  # makes pyannote use the cached features
    hypotheses = {}
    for file in files:
        hit = cache.load(file) if cache else False
        output = pipeline(file, hook=StepTimer(timings))
        if cache and not hit:
            cache.save(file)
        hypotheses[file["uri"]] = getattr(output, "speaker_diarization", output)
    return hypotheses


def export_pipeline(
    folder: Path,
    models: tuple[Path, Path],
    clustering: str,
    params: dict[str, dict[str, Value]],
    plda: Path | None,
    batch_sizes: tuple[int, int],
) -> Path:
    """Write a pipeline that ``pyannote.audio.Pipeline.from_pretrained(folder)`` loads.

    ``config.yaml`` names pyannote's own ``SpeakerDiarization``, with the models and the
    PLDA in subfolders, as community-1 lays them out: diartune is needed to load it
    only where a model's architecture is diartune's (docs/models.md).

    Parameters
    ----------
    folder
        Where to write ``config.yaml``, the models and the PLDA.
    models
        The segmentation and embedding checkpoints, copied into the folder.
    clustering
        The clustering method.
    params
        The pipeline's parameters, nested by group.
    plda
        The PLDA folder the trial clustered with, or None: pyannote's class loads a
        PLDA whatever the clustering, so an inert one stands in (:func:`write_inert_plda`).
    batch_sizes
        Segmentation and embedding batch sizes, as the trial ran them.
    """
    for name, checkpoint in zip(("segmentation", "embedding"), models, strict=True):
        (folder / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, folder / name / "pytorch_model.bin")
    if plda is None:
        write_inert_plda(folder / "plda")
    else:
        (folder / "plda").mkdir()
        for name in (TRANSFORM_FILE, PLDA_FILE):
            shutil.copyfile(plda / name, folder / "plda" / name)
    config = {
        "dependencies": {"pyannote.audio": pyannote_version},
        "pipeline": {
            "name": STOCK_PIPELINE,
            "params": {
                "segmentation": "$model/segmentation",
                "embedding": "$model/embedding",
                "plda": "$model/plda",
                "clustering": clustering,
                "segmentation_batch_size": batch_sizes[0],
                "embedding_batch_size": batch_sizes[1],
            },
        },
        "params": params,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder
