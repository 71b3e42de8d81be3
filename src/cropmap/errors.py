"""The one exception type whose message the CLI prints as a single line to the user."""


class CropmapError(Exception):
    """A problem with the user's input or environment: the message names the file and the problem."""
