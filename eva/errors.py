"""The one exception type eva raises for problems the user can fix."""


class EvaError(Exception):
    """Bad input or environment. The message is one line that names the bad value.

    The command line prints it without a traceback and exits non-zero (set
    HYDRA_FULL_ERROR=1 for the traceback); inside a sweep it fails that job only.
    """
