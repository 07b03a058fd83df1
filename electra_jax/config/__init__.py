"""Configs: the schema of every run's config (schema.py) and the values each field may
take (validation.py), with the names the rest of electra_jax uses."""

from electra_jax.config.schema import (ATTENTION_IMPLEMENTATIONS, CLASSIC_BACKBONE,
                                       DEFAULT_AXIS_RULES, DEFAULT_MASKING_PROBS, DTYPES,
                                       EMBEDDING_SHARING, MESH_AXES, MODEL_SIZES,
                                       NONFINITE_POLICIES, OBJECTIVES, REMAT_POLICIES,
                                       default_config, generator_dims, masking_probs,
                                       max_predictions_per_seq, mesh_axes_of, migrate,
                                       resolved, sized_config)
from electra_jax.config.validation import check_fields, Rule, validate

__all__ = ["ATTENTION_IMPLEMENTATIONS", "CLASSIC_BACKBONE", "DEFAULT_AXIS_RULES",
           "DEFAULT_MASKING_PROBS", "DTYPES", "EMBEDDING_SHARING", "MESH_AXES", "MODEL_SIZES",
           "NONFINITE_POLICIES", "OBJECTIVES", "REMAT_POLICIES", "Rule", "check_fields",
           "default_config", "generator_dims", "masking_probs", "max_predictions_per_seq",
           "mesh_axes_of", "migrate", "resolved", "sized_config", "validate"]
