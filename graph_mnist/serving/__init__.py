"""TensorFlow Serving's REST API over exported SavedModels, in the parts TensorFlow
Serving itself has: `batching` (requests run together), `versions` (the version
manager), `json_tensor` (the request and response formats), `rest` (the handler and the
drawing page), `server` (the process main). `python -m graph_mnist.serve` is its command
line."""
