"""The one exception type that means "the user gave us something we cannot use"."""


class UsageError(Exception):
    """Bad input from the user: the command line prints its message as one line and exits 2.

    The message names the problem and what is allowed, e.g.
    ``activation 'relux' is unknown; allowed: elu, gelu, relu, ...``.
    """
