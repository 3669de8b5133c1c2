"""Whether a metric is minimised: the one rule early stopping, ``best.pt``, ``runs compare``,
sweeps and the TUI share.

A metric name (a history column such as ``val_hv_mse`` or ``train_loss_np_dice``) is minimised
when one of its ``_``-separated words names a cost: a loss, an error or a distance (``loss``,
``mse``, ``mae``, ``rmse``, ``error``, ``err``, ``nll``, ``ece``, ``brier``, ``perplexity``,
``distance``). Everything else (accuracy, F1, Dice, PQ, AJI...) is maximised. Whole words, not
substrings, so ``val_processed`` is not a loss. A task may declare a metric's direction
explicitly (``Task.metric_directions``); the declaration wins over the rule. Pure Python: the CLI
and the TUI import it without torch.
"""

from __future__ import annotations

from collections.abc import Mapping

MINIMISED_WORDS = frozenset(
    {
        "loss",
        "mse",
        "mae",
        "rmse",
        "error",
        "err",
        "nll",
        "ece",
        "brier",
        "perplexity",
        "distance",
    }
)
_SPLIT_PREFIXES = ("train_", "val_", "test_")


def _bare(name: str) -> str:
    for prefix in _SPLIT_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def metric_is_minimised(name: str, declared: Mapping[str, str] | None = None) -> bool:
    """True when lower values of ``name`` are better.

    ``declared`` maps metric names (with or without their ``val_``/``train_`` prefix) to
    ``"min"`` or ``"max"`` and overrides the word rule.
    """
    if declared:
        for key in (name, _bare(name)):
            mode = declared.get(key)
            if mode is not None:
                if mode not in ("min", "max"):
                    raise ValueError(f"direction of {key}: expected 'min' or 'max', got {mode!r}")
                return mode == "min"
    return any(word in MINIMISED_WORDS for word in name.lower().split("_"))


def metric_mode(name: str, declared: Mapping[str, str] | None = None) -> str:
    """``"min"`` or ``"max"`` for ``name`` (see ``metric_is_minimised``)."""
    return "min" if metric_is_minimised(name, declared) else "max"
