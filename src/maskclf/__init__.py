"""maskclf: a toolkit for the face mask-status competition (18 classes, macro F1).

From Python: ``maskclf.Run`` (train, resume, predict, export, report; a run's results as
objects), ``maskclf.Export`` (predict on onnxruntime), ``maskclf.run_auto`` and
``maskclf.compare``, loaded on first use so ``import maskclf`` stays light.
"""

__version__ = "0.1.0"
__all__ = ["Export", "Run", "__version__", "compare", "run_auto"]


def __getattr__(name: str):
    if name in ("Export", "Run", "compare", "run_auto"):
        from maskclf import api

        return getattr(api, name)
    raise AttributeError(f"module 'maskclf' has no attribute {name!r}")
