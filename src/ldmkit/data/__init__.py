"""Datasets: Fashion-MNIST, image folders and synthetic shapes, all yielding images in [-1, 1]."""

from ldmkit.data.fashion_mnist import CLASS_NAMES, FashionMNIST, load_fashion_mnist_arrays

__all__ = ["CLASS_NAMES", "FashionMNIST", "load_fashion_mnist_arrays"]
