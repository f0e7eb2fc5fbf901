"""``maskclf auto``: spend a time budget the way a winning team would.

``preset`` reads the portfolio and the stage settings (a YAML file a user can copy);
``plan`` measures this machine and divides the budget; ``study`` hands out the work as
Optuna trials, each an ordinary run directory (successive halving on one fold, k-fold
training of the survivors); ``selection`` picks the ensemble; ``finish`` writes the
submission, ``summary.json`` and ``report.md``.
"""
