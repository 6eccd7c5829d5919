"""The one base of the errors a user can cause and fix.

The CLI prints an :class:`AikdError` as one line and exits with status 2; every other
exception is a bug and keeps its traceback, so a numpy shape error never reads like a
typo in a job spec. Modules derive their own kinds (storage, shards, weights...) from it.
"""

from __future__ import annotations


class AikdError(Exception):
    """A problem the user can fix: a bad spec, a missing input, data unusable as a whole."""


class ConfigError(AikdError):
    """A job spec or an override that does not validate; the message names the field."""


class ComponentError(AikdError):
    """A component (model, teacher, head, strategy) asked for by a name or options the registry lacks."""


class JobFailed(AikdError):
    """A Ray job or training run that ended in failure (its own log says why)."""
