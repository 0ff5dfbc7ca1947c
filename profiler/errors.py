"""Exception types for user-facing errors.

Every error a user can cause (bad path, foreign file, missing extra) is one of these,
so the CLI can print a single line and exit 2 instead of a traceback.
"""

from __future__ import annotations


class AccelscopeError(Exception):
    """Base class for errors accelscope reports to the user in one line."""


class RunFormatError(AccelscopeError, ValueError):
    """A path is not a readable accelscope run directory."""


class MissingExtraError(AccelscopeError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


def require(module: str, extra: str, feature: str):
    """Import an optional module, or raise MissingExtraError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{feature} needs '{module}', which is not installed: pip install 'accelscope[{extra}]'"
        ) from exc
