"""The catalog's mutants of how training data flows to the ranks: the latent folder's index
and loaders, the sharding of an epoch over ranks, the loader factory's checks, and the
reference statistics of an evaluation. Each is a bug that trains or scores on other samples
than the ones meant (a rank's share, an epoch's order, a statistic of another set) without a
word."""

from mutant import Mutant

__all__ = ["DATA_FLOW_MUTANTS"]

DATA_FLOW_MUTANTS: list[Mutant] = []
