"""TensorFlow Serving's REST and gRPC APIs over exported SavedModels, in the parts
TensorFlow Serving itself has: `server` (the process main), `rest` (the REST handler and
the drawing page), `grpc_api` (PredictionService and ModelService), `versions` (the
version manager), `board` (what the serving processes share), `batching` (requests run
together), `json_tensor` (the REST request and response formats), `errors` (status codes
for both APIs), `config` (TensorFlow Serving's configuration files), `metrics`
(Prometheus, under TensorFlow Serving's names). `python -m graph_mnist.serve` is its
command line."""
