"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class LandscapeError(Exception):
    """A user-facing error: bad input, a missing file, a conflicting result file."""
