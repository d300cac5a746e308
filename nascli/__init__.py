"""nascli: neural architecture search and pruning for PyTorch models, from Python or a shell."""

__version__ = "0.1.0"
