"""The one kind of failure an entry point reports as a message, not a traceback."""


class UserError(Exception):
    """Something the user can act on (missing data, a bad workdir, an unreadable image);
    its message says what happened and what to do. `graph_mnist.cli.run` prints it and
    exits with status 1; every module's own error class derives from it."""
