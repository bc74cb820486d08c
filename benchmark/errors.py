"""The one exception type a user sees: a problem with their input, phrased as a one-line message."""


class ZoobenchError(Exception):
    """A problem with a user's input or environment; the CLI prints it without a traceback."""


class DataError(ZoobenchError):
    """A dataset cannot be found, decoded or split as asked."""


ERROR_FILE = "error.txt"


def short_error(exc: BaseException) -> str:
    """``Type: first line`` of an exception, for a plan line or a member's recorded reason."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def write_traceback(folder, exc: BaseException):
    """Write ``exc``'s traceback to ``folder/error.txt`` (atomically) and return that path.

    A failure the run survives (a member, the ensembles, the report) is one line on the console;
    the traceback is kept here for whoever debugs it. Writing it never raises: a folder that
    cannot take the file gives None.
    """
    import logging
    import traceback
    from pathlib import Path

    from benchmark import atomic

    path = Path(folder) / ERROR_FILE
    try:
        atomic.write_text(path, "".join(traceback.format_exception(exc)))
    except OSError as err:
        logging.getLogger(__name__).warning("could not write %s (%s)", path, err)
        return None
    return path
