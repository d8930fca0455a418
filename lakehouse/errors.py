"""The product's one small exception hierarchy.

Every error a user can cause or meet derives from :class:`MobilityError`; the CLI prints its message
as one line and exits non-zero, never a traceback.
"""


class MobilityError(Exception):
    """Base class of every error the product raises on purpose."""


class InputError(MobilityError):
    """Bad input from a user: an unreadable file, an unknown option value, a bad query."""


class StorageError(MobilityError):
    """The lake could not be read or written (missing table, commit conflict that persisted)."""
