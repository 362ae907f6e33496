"""What every dual op's autograd formula shares."""


def mark_tangent_outputs(ctx, *outputs):
    """The tangent outputs (and attention's LSE) take no gradient: the MeanFlow target is
    stop-gradient. Their incoming gradients are left as None instead of being materialised
    as zero tensors that every backward would allocate, fill and ignore."""
    ctx.mark_non_differentiable(*outputs)
    ctx.set_materialize_grads(False)
