"""Models: timm's registry plus cellbench's built-ins (``simple_cnn``, ``inception_multibranch``).

Importing this package registers the built-ins with ``timm.models.register_model``, so
``timm.create_model("simple_cnn", num_classes=10)`` works as well as ``create_model(cfg, 10)``.
"""

from cellbench.models import inception_multibranch as _inception_multibranch  # noqa: F401
from cellbench.models import simple_cnn as _simple_cnn  # noqa: F401
from cellbench.models.factory import BUILTIN_MODELS, check_model_name, create_model, list_models
from cellbench.models.inception_multibranch import InceptionMultibranch
from cellbench.models.params import (
    backbone_parameters,
    count_parameters,
    head_parameters,
    set_backbone_trainable,
)
from cellbench.models.simple_cnn import SimpleCNN
from cellbench.models.weights import (
    WeightsReport,
    load_state,
    load_weights,
    read_state_dict,
    strip_prefixes,
)

__all__ = [
    "BUILTIN_MODELS",
    "InceptionMultibranch",
    "SimpleCNN",
    "WeightsReport",
    "backbone_parameters",
    "check_model_name",
    "count_parameters",
    "create_model",
    "head_parameters",
    "list_models",
    "load_state",
    "load_weights",
    "read_state_dict",
    "set_backbone_trainable",
    "strip_prefixes",
]
