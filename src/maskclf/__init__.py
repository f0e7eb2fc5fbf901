"""maskclf: a toolkit for the face mask-status competition (18 classes, macro F1)."""

__version__ = "0.1.0"
