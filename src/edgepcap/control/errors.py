"""Requests the control plane refuses, one exception class per reason.

The class says why; the message says it to the caller in words. This layer knows nothing of
HTTP: `api.errors.refused` maps each class to its status and error code.
"""

from __future__ import annotations


class Refused(Exception):
    """A request refused by the control plane's rules; subclasses name the reason."""


class NotFound(Refused):
    """No such capture or bucket in the caller's account (another account's looks the same)."""


class InvalidRequest(Refused):
    """A value that can never work: a filter that cannot match, a colo with no machines."""


class DestinationInvalid(Refused):
    """A `destination_conf` that is not a usable bucket URL."""


class BucketNotValidated(Refused):
    """A full capture's bucket that the account has not added, or not proven it owns."""


class WrongState(Refused):
    """An action the capture's type or status does not allow (stopping a sample capture)."""


class RateLimited(Refused):
    """Too soon: `retry_after` seconds (at least 1) until the request may succeed."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SampleRateLimited(RateLimited):
    """The account's sample capture came before its interval was over."""


class FullRateLimited(RateLimited):
    """No place left in the account's window of full creates."""


class FullCaptureBusy(RateLimited):
    """The account already has a pending or running full capture: one at a time."""


class SamplesUnavailable(Refused):
    """The sample store could not answer (unreachable, or it refused the query: over its
    memory or time limit). The message says which, never the query or its values."""


class ChallengeMismatch(Refused):
    """The ownership challenge sent back is not what the bucket's challenge file holds."""


class ChallengeUnreachable(Refused):
    """The challenge file could not be written or read back. The message never tells the
    cause: before ownership is proven it would say which buckets exist."""
