"""The talk's networks in TensorFlow 2's styles beside its TensorFlow 1 graph code:
`eager` (--style=function, a Python loop over a tf.function step; --style=keras, Keras's
fit with a callback keeping the books) and `twins` (the Keras 3 and PyTorch twins of a
network, built from its description, for the Keras style and the benchmark)."""
