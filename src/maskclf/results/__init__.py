"""Pure functions over prediction files: submissions, ensembles, decision biases, pseudo-labels,
the person vote."""
