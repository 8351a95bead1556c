"""What a tuning may ask of its trial pods: the cluster administrator decides, in the chart.

Whoever may create a DiarizationTuning gets Jobs created by the operator's service
account; without limits, that would be a way to run any image, read any Secret of the
namespace through the pod's environment, or schedule onto reserved nodes. The policy
(the chart's ``trialPolicy``) names what is allowed; the operator launches no trial of a
tuning that asks for anything else and says why in the ``TrialTemplateInvalid``
condition. The trial pod's service account, user and security context are not the
tuning's to choose at all (``JobDefaults``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from diartune.operator.settings import JobDefaults, apply_template
from diartune.spec.model import Spec


@dataclass(frozen=True)
class TrialPolicy:
    """What trial pods may use.

    Attributes
    ----------
    images
        Image prefixes a trialTemplate may name (e.g. ``registry.example/diartune/``); the
        chart's own trial image is always allowed. Empty: only the chart's image.
    secrets
        Secrets a tuning may reference: ``data.s3.credentialsSecret``,
        ``pipeline.tokenSecret`` and the trialTemplate's ``secretKeyRef``s.
    toleration_keys
        Taint keys a trialTemplate may tolerate.
    node_selector_keys
        Node labels a trialTemplate may select on; empty: any (selecting a node grants no
        privilege, tolerating its taint does).
    """

    images: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    toleration_keys: tuple[str, ...] = ("nvidia.com/gpu",)
    node_selector_keys: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> TrialPolicy:
        """The chart's policy (``DIARTUNE_TRIAL_POLICY``, JSON), else the defaults."""
        raw = env.get("DIARTUNE_TRIAL_POLICY")
        if not raw:
            return cls()
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"DIARTUNE_TRIAL_POLICY: not valid JSON: {error}") from None
        return cls(
            images=tuple(document.get("allowedImages") or ()),
            secrets=tuple(document.get("allowedSecrets") or ()),
            toleration_keys=tuple(document.get("allowedTolerationKeys") or ()),
            node_selector_keys=tuple(document.get("allowedNodeSelectorKeys") or ()),
        )

    def refusals(self, spec: Spec, defaults: JobDefaults) -> list[str]:
        """What ``spec`` asks that the policy does not allow, field by field; the image
        checked is the one its Jobs run (``defaults``: the chart's)."""
        template = spec.trial_template
        problems = []
        image = apply_template(template, defaults).image
        allowed = (*self.images, *([defaults.image] if defaults.image else []))
        if not any(_image_allowed(image, prefix) for prefix in allowed):
            problems.append(f"spec.trialTemplate.image {image!r} is not one the chart allows")
        for where, secret in _secrets(spec):
            if secret not in self.secrets:
                problems.append(f"{where}: Secret {secret!r} is not one the chart allows")
        for index, toleration in enumerate(template.tolerations):
            if toleration.key not in self.toleration_keys:
                problems.append(
                    f"spec.trialTemplate.tolerations[{index}].key {toleration.key!r} "
                    "is not one the chart allows"
                )
        if self.node_selector_keys:
            for key in template.node_selector:
                if key not in self.node_selector_keys:
                    problems.append(
                        f"spec.trialTemplate.nodeSelector.{key} is not one the chart allows"
                    )
        return problems


def _image_allowed(image: str, allowed: str) -> bool:
    """``allowed`` is an image, a repository (any of its tags or digests), or a prefix
    ending with ``/`` (any repository under it)."""
    if allowed.endswith("/"):
        return image.startswith(allowed)
    return image == allowed or image.startswith((f"{allowed}:", f"{allowed}@"))


def _secrets(spec: Spec) -> list[tuple[str, str]]:
    found = []
    if spec.data.s3 and spec.data.s3.credentials_secret:
        found.append(("spec.data.s3.credentialsSecret", spec.data.s3.credentials_secret))
    if spec.pipeline.token_secret:
        found.append(("spec.pipeline.tokenSecret", spec.pipeline.token_secret))
    for index, var in enumerate(spec.trial_template.env):
        if var.value_from is not None:
            where = f"spec.trialTemplate.env[{index}].valueFrom.secretKeyRef"
            found.append((where, var.value_from.secret_key_ref.name))
    return found
