"""maskclf: a toolkit for the face mask-status competition (18 classes, macro F1).

From Python: ``maskclf.Run`` (train, resume, predict, export, report; a run's results as
objects) and ``maskclf.compare``, loaded on first use so ``import maskclf`` stays light.
"""

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "compare"]


def __getattr__(name: str):
    if name in ("Run", "compare"):
        from maskclf import api

        return getattr(api, name)
    raise AttributeError(f"module 'maskclf' has no attribute {name!r}")
