"""The organ-head task: stored backbone CLS features -> tissue or family (task, head model,
report, predictor)."""
