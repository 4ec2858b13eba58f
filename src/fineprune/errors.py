"""The one exception type for bad user input: the CLI prints its message on one line and exits 2; and the one for a
job stopped by a signal."""

import signal


class UsageError(ValueError):
    """Bad input from the user (a config key, a file, a setting): the message names it and says what is wrong."""


class Interrupted(BaseException):
    """A job stopped by a signal (Ctrl-C, SIGTERM): the CLI prints the message on one line and exits 128 + the
    signal's number, as a shell reports a process the signal ended. A BaseException, as KeyboardInterrupt is: a
    library's ``except Exception`` must not swallow it (torch.onnx's exporter tries its next strategy on any
    Exception, and the export went on)."""

    def __init__(self, signum: int, note: str = ""):
        super().__init__(f"interrupted by {signal.Signals(signum).name}" + (f": {note}" if note else ""))
        self.signum = signum
