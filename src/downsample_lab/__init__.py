"""downsample-lab: max-pooling or strided convolution? Measured on CIFAR-10 with Lightning and Hydra."""

__version__ = "0.1.0"
