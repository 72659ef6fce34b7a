"""Error and warning types shared by every certopt module.

Every error raised for bad user input is a subclass of the built-in
``ValueError`` or ``TypeError``, so ``except ValueError`` keeps working, and of
:class:`CertoptError`, so ``except CertoptError`` catches all of ours.
Messages name the argument, what was received and what was expected.
"""

from __future__ import annotations


class CertoptError(Exception):
    """Base class of every exception certopt raises on purpose."""


class InputValueError(CertoptError, ValueError):
    """An argument has the right type but a wrong value, shape or content."""


class InputTypeError(CertoptError, TypeError):
    """An argument has a type certopt cannot handle."""


class UnsupportedError(InputTypeError):
    """A model component (layer, loss, option) certopt has no rule for."""


class InfeasibleSettingsError(InputValueError):
    """The requested settings describe an empty or ill-posed problem."""


class ConvergenceWarning(UserWarning):
    """A solver stopped before meeting its tolerance; see ``result.status``."""
