"""The one exception type a user sees: a problem with their input, phrased as a one-line message."""


class ZoobenchError(Exception):
    """A problem with a user's input or environment; the CLI prints it without a traceback."""


class DataError(ZoobenchError):
    """A dataset cannot be found, decoded or split as asked."""


def short_error(exc: BaseException) -> str:
    """``Type: first line`` of an exception, for a plan line or a member's recorded reason."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
