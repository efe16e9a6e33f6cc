"""The network: VGG16's layers, its Flax module, and the ImageNet weights it runs with."""
