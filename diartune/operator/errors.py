"""The errors a tuning's worker retries without alarm: a pass that meets one is tried again
after a delay, from the cluster's state, and the error is logged as one line."""

from __future__ import annotations

from kubernetes.client import ApiException
from urllib3.exceptions import HTTPError


class TemporaryError(Exception):
    """A pass that cannot go on now but will later, as kopf's ``TemporaryError``.

    Parameters
    ----------
    message
        What happened, for the log.
    delay
        Seconds to wait before the next pass; None: the worker's backoff (doubling up to
        ``ReconcileSettings.max_backoff_seconds``).
    """

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class StaleTrial(TemporaryError):
    """A DiarizationTrial or Job of this name exists, left by an earlier tuning of the same
    name: it is deleted, and the next pass creates this tuning's."""


#: What a pass may meet while the cluster or its network is busy (logged without a traceback).
TEMPORARY = (ApiException, HTTPError, OSError, TimeoutError, TemporaryError)
