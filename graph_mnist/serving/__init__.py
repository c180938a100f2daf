"""TensorFlow Serving's REST and gRPC APIs over exported SavedModels, in the parts
TensorFlow Serving itself has: `server` (the process main), `core` (the request
processor both APIs share), `rest` and `grpc_api` (the two transports, and the drawing
page), `decide` (which versions of which models answer, in the first process),
`versions` (loading and retiring them, in every process), `servable` (one loaded
version), `board` (what the serving processes share), `batching` (requests run
together), `json_tensor` (the REST request and response formats), `errors` (status
codes for both APIs), `config` (TensorFlow Serving's configuration files), `metrics`
(Prometheus, under TensorFlow Serving's names). `python -m graph_mnist.serve` is its
command line."""
