"""The one exception type for bad user input: the CLI prints its message on one line and exits 2."""


class UsageError(ValueError):
    """Bad input from the user (a config key, a file, a setting): the message names it and says what is wrong."""
