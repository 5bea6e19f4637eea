"""implicit-bias: measure the implicit biases of gradient-trained networks."""

__version__ = "0.1.0"
