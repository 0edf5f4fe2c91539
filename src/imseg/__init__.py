"""imseg: semi-supervised image segmentation with Inconsistency Masks."""

__version__ = "0.1.0"
