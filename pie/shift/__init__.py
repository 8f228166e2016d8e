"""Distribution shift: the ImageNet-C / CIFAR-10-C corruptions, their building blocks and severity tables."""
