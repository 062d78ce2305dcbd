"""DistillConfig: invalid values and unknown fields are refused with the field named."""

from __future__ import annotations

import pytest

from inhibitron.model.recipes import default_config


def test_config_validation():
    with pytest.raises(ValueError, match="recipe must be one of"):
        default_config("bogus")
    with pytest.raises(ValueError, match="unknown DistillConfig fields \\['learning_rate'\\]"):
        default_config("full", learning_rate=1.0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, not 0"):
        default_config("full", batch_size=0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        default_config("full", schedule="step")
    with pytest.raises(ValueError, match="text_unit must be one of"):
        default_config("full", text_unit="paragraph")
    with pytest.raises(ValueError, match="layers must be strictly increasing"):
        default_config("layerwise", layers=(1, 0))
    with pytest.raises(ValueError, match="alpha_kd and alpha_hidden are both 0"):
        default_config("task", alpha_kd=0.0, alpha_hidden=0.0)
