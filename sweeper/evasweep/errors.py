"""The exception the sweeper raises for problems the user can fix."""


class SweepError(Exception):
    """Bad input or environment, in one line that names the bad value.

    The sweeper prints it without a traceback and exits 1 (HYDRA_FULL_ERROR=1 shows the
    traceback). An app's own error types join through Integration.user_errors.
    """
