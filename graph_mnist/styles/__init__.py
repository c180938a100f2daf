"""The talk's networks written in other styles than its TensorFlow 1 graph code:
`twins` (Keras 3 and PyTorch, built from a network's description)."""
