"""Yosinski et al. (2014), "How transferable are features in deep neural networks?", on CIFAR-10."""

__version__ = "0.1.0"
