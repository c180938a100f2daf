"""What a request can fail with: TensorFlow Serving's status codes and messages."""


class ServingError(Exception):
    """A request that cannot be answered: its HTTP status and TensorFlow Serving's message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message):
    return ServingError(400, message)


class Unloaded(Exception):
    """The version was unloaded between choosing it and giving it the request."""
