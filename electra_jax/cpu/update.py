"""The optimizer's update for a CPU: inside a `lax.cond` on the step being finite.

A train step updates the parameters and Adam's moments only where its loss and
gradient are finite. Written as `where(finite, new, old)` over every array,
the old moments are still read once the new ones are written, and XLA's CPU
code then copies every moment before updating it in place. Inside a
`lax.cond` no copy is needed. GPUs and TPUs keep the `where`: a `cond` there
may wait on the host for its predicate.
"""

from typing import Any, Callable

import jax

from electra_jax.cpu import SCOPE


def update_in_branch(condition: jax.Array, update: Callable[[Any, Any], tuple[Any, Any]],
                     params: Any, opt_state: Any) -> tuple[Any, Any]:
  """`update(params, opt_state)` if `condition`, else the two unchanged."""
  with jax.named_scope(SCOPE):
    return jax.lax.cond(condition, update, lambda *unchanged: unchanged, params, opt_state)
