"""The one exception type a user sees: a problem with their input, phrased as a one-line message."""


class ZoobenchError(Exception):
    """A problem with a user's input or environment; the CLI prints it without a traceback."""


class DataError(ZoobenchError):
    """A dataset cannot be found, decoded or split as asked."""
