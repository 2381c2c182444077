"""Errors meant for the user: one base class, printed by the CLI as one line with the fix (exit 2).

Anything that does not derive from `UserError` is a bug in this pipeline and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A request that cannot be done as asked; the message names what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """An option value that is out of range or inconsistent with another option."""


class InputError(UserError, ValueError):
    """An input (shards, folder, feature root, labels, selection) that is malformed or unusable."""


class MissingInputError(UserError, FileNotFoundError):
    """An input path that does not exist or holds nothing usable."""


class WeightsError(UserError):
    """Weights asked for cannot be found or read; the message says how to pass `--weights`."""


class DeviceError(UserError):
    """The device asked for is not present on this machine."""


class MismatchError(UserError, ValueError):
    """Two things made differently (model, weights, preprocessing, settings) that must not be mixed."""


class ConfigMismatchError(MismatchError):
    """An output root already holds features made another way."""


class MixedProvenanceError(MismatchError):
    """Feature files made by different models, weights or preprocessings cannot be used together."""


class SelectionError(InputError):
    """A selection names samples the source does not have, or would write them unsafely."""
