"""Reports: a run's report and its advice, figures, EDA, label suspects."""
