"""The one error a run reports without a stack trace."""


class JobError(Exception):
    """A problem with the inputs or options; the message says what and how to fix it."""
