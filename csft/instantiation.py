"""Building objects from config, with csft's own errors kept readable."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from csft.errors import CsftError


def instantiate_unwrapping_errors(node: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, but a csft error raised while building surfaces as itself
    (Hydra wraps it in InstantiationException, which would hide the one clear message)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, CsftError):
            raise cause from None
        raise
