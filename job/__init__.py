"""CIFAR-10 training jobs: the Keras chapter's two model styles and two loops, as a batch job."""

__version__ = "0.1.0"
