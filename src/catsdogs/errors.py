"""The one exception type that the command line shows to users as a plain message."""


class CatsdogsError(Exception):
    """A problem the user can fix: bad input, a bad setting or a missing file.

    The message says what happened, what was expected and how to fix it. The
    command line prints it without a traceback and exits with status 2.
    """
