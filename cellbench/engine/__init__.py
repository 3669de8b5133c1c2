"""The training engine: one loop for every task, fresh start, resume, LR finder, checks."""
