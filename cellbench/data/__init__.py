"""Data: PanNuke reader/validator/converter, synthetic data, targets, classification sources.

Nuclei modules (numpy only, no torch): ``families`` (tissues, families, fold protocol),
``pannuke`` (raw folds), ``npyio`` (safe memory-mapped .npy), ``convert`` (raw masks -> instance
and type maps, quirks), ``targets`` (NP/HV), ``store`` (canonical store), ``staging`` (atomic
folders), ``prepare``, ``synth``, ``check``, ``stats``, ``records``, ``augment``.
Torch: ``nuclei_dataset.NucleiDataset``. Classification sources live in ``classify``.
Import submodules directly; this package imports nothing so that the CLI stays fast.
"""
