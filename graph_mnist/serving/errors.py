"""What a request can fail with: TensorFlow Serving's status codes and messages, in HTTP
for the REST API and as gRPC's canonical codes for the gRPC API."""

# gRPC's code for an HTTP status, as TensorFlow Serving maps one to the other
# (http_rest_api_util.cc: ToHTTPStatusCode, read the other way).
GRPC_CODES = {400: 'INVALID_ARGUMENT', 404: 'NOT_FOUND', 408: 'DEADLINE_EXCEEDED',
              413: 'RESOURCE_EXHAUSTED', 429: 'RESOURCE_EXHAUSTED', 500: 'INTERNAL',
              503: 'UNAVAILABLE', 504: 'DEADLINE_EXCEEDED'}


class ServingError(Exception):
    """A request that cannot be answered: its HTTP status, TensorFlow Serving's message,
    and the gRPC code (by default the one TensorFlow Serving gives for that status)."""

    def __init__(self, status, message, code=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or GRPC_CODES.get(status, 'UNKNOWN')


def bad_request(message):
    return ServingError(400, message)


def not_found(message):
    return ServingError(404, message)


class Unloaded(Exception):
    """The version was unloaded between choosing it and giving it the request."""
