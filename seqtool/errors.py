"""Errors a user can act on. The CLI prints them as one `Error: ...` line, exit code 1."""


class SeqtoolError(Exception):
    """Base class: the message is the whole story, no traceback is shown."""


class DataError(SeqtoolError):
    """An input file is missing, empty, not UTF-8 or malformed (names file and line)."""


class CheckpointError(SeqtoolError):
    """A checkpoint is missing, corrupt, unsafe or of another task."""


class OutputError(SeqtoolError):
    """A file cannot be written (a full disk, a missing or read-only folder); names it."""


class ConfigError(SeqtoolError):
    """Options that cannot work together, or a run directory that would be overwritten."""


class TrainingError(SeqtoolError):
    """Training cannot go on (a NaN loss); the last good checkpoint is kept."""


class TrainingInterrupted(SeqtoolError):
    """SIGINT, SIGTERM or SIGHUP: `last.ckpt` was saved and the run can be resumed."""


class SeqtoolWarning(UserWarning):
    """Something the user should know that does not stop the work (lines cut, lines
    skipped); the CLI prints these as `Warning: ...` lines."""


def printable(text: str) -> str:
    """`text` with its control characters (a newline, a terminal's escape sequences) shown
    as escapes: a file name or a checkpoint's string may come from a stranger, and each
    message must stay one line that the terminal shows rather than obeys."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def warn(message: str) -> None:
    """Report `message` as a SeqtoolWarning: library callers see a Python warning."""
    import warnings

    warnings.warn(message, SeqtoolWarning, stacklevel=2)
