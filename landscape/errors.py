"""The one exception type the CLI turns into a one-line message and a non-zero exit, and the advice it gives."""


class LandscapeError(Exception):
    """A user-facing error: bad input, a missing file, a conflicting result file."""


def resume_advice(line: str, overwrite: bool) -> str:
    """`line` with its advice to rerun the same command fixed for a run started with --overwrite: run again as it
    was, it would replace the file with its finished points."""
    if overwrite:
        return line.replace(
            "run the same command again to resume", "run the same command without --overwrite to resume"
        )
    return line
