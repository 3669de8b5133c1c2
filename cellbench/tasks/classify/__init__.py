"""The classification task: images -> one class (task, evaluation; predictor in ``inference``)."""
