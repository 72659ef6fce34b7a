"""Optimal transport with dual certificates.

Every solver returns a :class:`~certopt.ot.result.TransportResult`: the plan
(same array kind, dtype and device as ``C``), its cost and regularised
objective, a dual value (lower bound), the gap, the marginal residuals,
the status and timings.

* :func:`sparse`: at most ``k`` nonzeros per plan column (Liu et al. 2023);
* :func:`quadratic`: quadratically regularised OT (``sparse`` with k = n);
* :func:`sinkhorn`: entropic OT (Sinkhorn in the scaling or log domain, with
  eps-scaling), its plan rounded onto the marginals, certified;
* :func:`exact`: unregularised OT by POT's network simplex, certified;
* :func:`class_based`: class-structured OT with a sum-of-norms regulariser.

``C`` is an ``(n, m)`` array, or for :func:`sparse`, :func:`quadratic` and
:func:`sinkhorn` a :class:`PointCloudCost` (``C_ij = ||x_i - y_j||^p``
computed block by block inside the solver's streamed passes, so the cost
matrix is never stored).
"""

from certopt.ot.class_based import class_based
from certopt.ot.exact import exact
from certopt.ot.geometry import PointCloudCost
from certopt.ot.quadratic import quadratic
from certopt.ot.result import TransportResult
from certopt.ot.sinkhorn import sinkhorn
from certopt.ot.sparse import sparse

__all__ = ["PointCloudCost", "TransportResult", "class_based", "exact", "quadratic", "sinkhorn",
           "sparse"]
