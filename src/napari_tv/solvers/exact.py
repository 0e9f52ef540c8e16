r"""Exact TV minimisation on a grid of grey levels (Darbon & Sigelle), by min cuts.

The problem, for data :math:`v` and an increasing grid :math:`\lambda_0<\dots<\lambda_{L-1}`:

.. math::

    \min_{u_s \in \{\lambda_k\}} E(u) = \sum_s f(u_s, v_s)
        + \beta \sum_{s\sim t} w_{st} |u_s - u_t|,

with the graph TV of :func:`napari_tv.operators.graph_tv` (connectivity 1 and unit weights:
the anisotropic TV).

Notes on the method (the argument the code relies on)
-----------------------------------------------------
*Coarea.*  Write :math:`x^k_s = 1[u_s > \lambda_k]` (the complement of Darbon–Sigelle's
:math:`u^\lambda = 1[u \le \lambda]`) and :math:`\delta_k = \lambda_{k+1}-\lambda_k`.  Then
:math:`|u_s-u_t| = \sum_k \delta_k |x^k_s-x^k_t|` and
:math:`f(u_s) = f(\lambda_0) + \sum_k \delta_k\, c_s(k)\, x^k_s` with the secant slope
:math:`c_s(k) = (f(\lambda_{k+1},v_s)-f(\lambda_k,v_s))/\delta_k`, so
:math:`E(u) = C + \sum_k \delta_k E^k(x^k)` with the binary, submodular level energies

.. math:: E^k(x) = \sum_s c_s(k)\, x_s + \beta\sum_{s\sim t} w_{st}|x_s-x_t| .

(Dividing by :math:`\delta_k` makes a non-uniform grid work: on a uniform grid this is seed
002's :math:`g_s(\lambda+1)-g_s(\lambda)` up to the factor :math:`\delta`.)

*Nesting.*  :math:`f` convex ⇒ secant slopes increase: :math:`c_s(k) \le c_s(k+1)`.  Let
:math:`A^k` be the *smallest* minimiser of :math:`E^k` (the sets of minimisers of a cut
function form a lattice).  For :math:`k<l`, with :math:`A=A^k`, :math:`B=A^l`,
:math:`E^l(A\cap B) = E^k(A\cap B) + \sum_{A\cap B}(c(l)-c(k))
\le E^k(A)+E^k(B)-E^k(A\cup B) + \sum_{B}(c(l)-c(k)) \le E^l(B)` (submodularity, then
:math:`E^k(A)\le E^k(A\cup B)`), so :math:`A\cap B` minimises :math:`E^l` and, ``B`` being the
smallest, :math:`B \subseteq A`.  The sets nest, :math:`u^*_s = \lambda_{\#\{k:\, s\in A^k\}}`
minimises every term of the sum at once, and it is *the* minimiser whose level sets are the
smallest ones.

*Dichotomy with one cut per round.*  Every pixel carries an index interval ``[lo, hi]``
known to hold :math:`u^*_s`; all start at ``[0, L-1]`` and each round splits every interval
with ``lo < hi`` at its midpoint ``m = (lo+hi)//2`` into ``[lo, m]`` and ``[m+1, hi]``.  Since
all pixels start with the same interval and split it the same way, two pixels' intervals are
always *identical or disjoint*; the pixels sharing one interval form a group (Darbon–Sigelle's
figure 1).  For a group ``G`` with midpoint ``m`` we need :math:`A^m\cap G`.  Every pixel
``t`` outside ``G`` has an interval disjoint from ``G``'s, hence entirely below ``m`` (so
:math:`t \notin A^m`) or entirely above (:math:`t \in A^m`): its value of :math:`x^m` is known.
Fixing those values, :math:`E^m` restricted to ``G`` keeps the pairwise terms *inside* ``G``
and turns each edge to a known neighbour into a unary term: a neighbour above costs
:math:`\beta w_{st}` when :math:`x_s = 0`, a neighbour below costs :math:`\beta w_{st}` when
:math:`x_s = 1`.  (Dropping these edges instead is wrong: with :math:`(u-v)^2`, ``v = [0, 3]``,
``L = 4``, :math:`\beta w = 2` the naive dichotomy returns ``[0, 3]`` (E = 6) instead of
``[1, 2]`` (E = 4).)  :math:`A^m\cap G` minimises this restricted energy because :math:`A^m`
agrees with the fixed values; it is its *smallest* minimiser because for any restricted
minimiser ``B``, :math:`B\cup(A^m\setminus G)` minimises :math:`E^m`, hence so does its
intersection with :math:`A^m`, which by minimality is :math:`A^m` itself, so
:math:`A^m\cap G\subseteq B`.  Groups share no pairwise term, so *all groups of a round are
one graph with no edges between them*, solved by a single max-flow although each group has its
own threshold; the smallest source side of the min cut (the source search tree, see
:mod:`.maxflow`) gives the smallest minimisers.  ``ceil(log2 L)`` rounds suffice.  (Any
minimiser, not only the smallest, would also lead to an optimum: unions/intersections with the
smallest family keep a nested family of minimisers; floating-point ties are therefore harmless.)

*Graph of a round.*  Source side ⇔ :math:`x_s = 1` ("above ``m``"); unary
:math:`a_s = c_s(m) - \beta\sum_{t\ \text{above}} w_{st} + \beta\sum_{t\ \text{below}} w_{st}`
becomes a sink arc :math:`a_s` (if > 0) or a source arc :math:`-a_s`; edges inside a group get
:math:`\beta w_{st}` both ways; every other edge has capacity 0.

*Reusing the flow between rounds.*  Round ``r+1`` does not start from zero flow: it starts
from round ``r``'s residual graph, reparametrised.  After a max flow the cut-function identity
:math:`E^{m}(x) = F + \sum_s \mathrm{tr}_s (1-x_s) + \sum_{(s\to t)} r_{st}\, x_s(1-x_t)` holds
(``tr`` the net terminal residual, :math:`r` the residual arc capacities, :math:`F` the flow).
Restrict to one new group ``G`` (one half of an old group ``P``), the other half fixed at its
old-level side: every residual arc from the upper half to the lower half is saturated
(:math:`r = 0`: the upper half is the set reachable from the source), and each reverse arc
multiplies :math:`x_t(1-x_s)` with the fixed :math:`x_t` on the wrong side, so both drop out.
Comparing the restricted old energy with the new one, the terms for edges leaving ``P`` are
identical and the edges to the other half of ``P`` give the same unary term :math:`\pm\beta
w_{st}` in both (that half lies below ``m_new`` exactly when it lay below ``m_old``), so the two
differ only by :math:`\sum_s (c_s(m_{\rm new}) - c_s(m_{\rm old}))\,x_s`: it suffices to
subtract the slope change from ``tr``, zero the arcs between different groups and the rows of
decided pixels, and resume pushing.  The work left per round is then about
:math:`\sum_s |c_s(m_{\rm new})-c_s(m_{\rm old})|`, which shrinks with the interval for smooth
fidelities (L2, noisy camera 256²: 4–5× faster than fresh flows); the L1 slopes jump
between ±1, so there it saves less.  Rounding can then split an exact tie differently than a
fresh cut would — a different minimiser, the same energy.

*Balanced rounds start fresh.*  The costly cut is the one whose midpoint falls on the level of a
large plateau (a dark background): excess and deficit nearly cancel over millions of voxels,
and the augmenting paths must cross the plateau.  Resumed flow does not help there; so a round
with a group of ``FRESH_MIN_NODES`` voxels or more, and excess and deficit within
``FRESH_BALANCE`` of each other is set up as a fresh round would be, and its max-flow first
carries excess to deficits along breadth-first distances (:meth:`.GridFlowState.maxflow`,
``route``).  Measured on the 128³ sample: that round 7.3 s -> 4.3 s, the solve 10.4 -> 6.7 s
(docs/benchmarks.md).  Both are valid reparametrisations, so the cut is the same.

*Poisson.*  :math:`f(0, v>0) = +\infty`, so :math:`c_s(k) = -\infty` ("u must go up") at the
grid points below the first positive level.  Such an infinite unary is replaced by a finite
:math:`C = 2T + 1`, with :math:`T = \sum_s \max_k |c_s(k)|_{\rm finite} + 2N\beta\sum_d w_d`
a bound on the sum of all finite terminal and edge capacities of *any* round (slopes are
monotone in ``k``, so the maximum is at the first finite or the last level): a cut violating
one of these constraints costs at least :math:`C > T \ge` the value of every cut that respects
them, so the minimum cuts — and the smallest one — are unchanged.  One ``C`` for all rounds
keeps the reparametrisation above exact.

*Boxes.*  :func:`solve_indices` can restrict each voxel to grid indices
:math:`a_s \le k \le b_s` (the chunked exact solve, :mod:`napari_tv._exact_chunked`, fixes a
block's frame this way and bounds its inside).  That adds the indicator of
:math:`[\lambda_{a_s}, \lambda_{b_s}]` to :math:`f_s`, still convex and separable: its secant
slopes are :math:`-\infty` for :math:`k < a_s` ("must go up") and :math:`+\infty` for
:math:`k \ge b_s`.  They are stood in for by :math:`\min(c_s(k), -C_{\rm box})` and
:math:`\max(c_s(k), C_{\rm box})`, which keeps the slopes increasing in ``k`` (so the
nesting holds), with :math:`C_{\rm box} = 2\beta\sum_d w_d + 1`: in any round, flipping a voxel
that violates its box back into it removes at least :math:`C_{\rm box}` from its unary and
changes its pairwise and neighbour terms by at most :math:`\beta\sum_d w_d`, so no minimum
cut violates a box.  This bound is local, so it does not grow with the volume as the Poisson
one does.

*Memory* per (padded) voxel: the max-flow's ``16K + 27`` bytes (:mod:`.maxflow`; its queues
shared by the threads) plus the data ``v`` (4 bytes for float32 data, which integer images of 16
bits or less become, else 8), the interval ``lo``, ``hi`` (4 + 4) and the node list (4, int32,
shared by the threads in disjoint segments): 75 B per pixel in 2-D (connectivity 1), 91 B per
voxel in 3-D (connectivity 1; about 0.19 GB for 128³); measured at 160³ uint8, 100 B per voxel
with the input's float32 copy and the result (docs/benchmarks.md).  The previous round's slope,
which the reparametrisation subtracts, is recomputed rather than stored: its level is known
from the side of the last cut each voxel fell on.  The residual capacities are the bulk: 16 B
per neighbour, two float64 arcs per edge.

*Threads.*  From the second round on, a round's groups are independent problems: they are dealt
into ``CHUNKS`` runs of consecutive intervals holding about equal numbers of voxels, and two
threads (``THREADS``) take the runs, largest first, each reparametrising and solving its own
groups (the kernels release the GIL; arcs to other groups are zeroed in both directions first,
so a thread never reads another's voxels across a positive arc).

References
----------
.. [1] J. Darbon and M. Sigelle, "Image restoration with discrete constrained total variation,
   part I: fast and exact optimization", J. Math. Imaging Vision 26(3), 261–276, 2006.
.. [2] J. Darbon and M. Sigelle, "A fast and exact algorithm for total variation minimization",
   IbPRIA 2005, LNCS 3522, 351–359.
.. [3] D. S. Hochbaum, "An efficient algorithm for image segmentation, Markov random fields and
   related problems", J. ACM 48(4), 686–701, 2001.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from napari_tv._config import jit
from napari_tv._validation import as_float_array, check_real, check_spacing
from napari_tv.fidelity import FIDELITY_CODE, check_fidelity_data
from napari_tv.operators import level_grid, neighbour_offsets, resolve_weights, tv_energy
from napari_tv.solvers._result import TVResult
from napari_tv.solvers.maxflow import FREE, GridFlowState

__all__ = ["solve_exact", "solve_level"]

#: threads for the max-flows of one round: from the second round on, the groups (independent
#: problems) are dealt into ``CHUNKS`` runs which two threads take as they get free.  Measured
#: on 2 cores (camera 512² L1 βw=0.26-0.78, 256² L2 β=20, best of 5, vs one thread): 1.6-1.8x
#: faster on a quiet machine; with the other core kept busy by another process, 0.93-1.2x.
THREADS = 2 if (os.cpu_count() or 1) >= 2 else 1
#: a round's groups are dealt into this many runs of about equal size, which the threads take
#: as they get free (the work of a group is not proportional to its size)
CHUNKS = 6
#: a run of groups holding one of at least this many voxels, its excess and deficit within
#: ``FRESH_BALANCE`` of each other, starts from fresh capacities (then the max-flow routes its
#: excess first)
FRESH_MIN_NODES = 200_000
FRESH_BALANCE = 0.8
#: below this many undecided voxels a round runs in one thread
MIN_PARALLEL_VOXELS = 20_000


@jit
def _secant_slope(v, x0, x1, code):
    """(f(x1, v) - f(x0, v)) / (x1 - x0) in closed form (exact ties stay ties)."""
    if code == 0:  # l2: ½(u-v)²
        return 0.5 * (x0 + x1) - v
    if code == 1:  # l1: |u-v|
        if v <= x0:
            return 1.0
        if v >= x1:
            return -1.0
        return (x0 + x1 - 2.0 * v) / (x1 - x0)
    # poisson: u - v log u, +inf for u < 0 or u = 0 < v
    if x0 < 0.0 or (x0 == 0.0 and v > 0.0):
        return -np.inf  # f(x0) infinite: going up is forced
    if v == 0.0:
        return 1.0
    return 1.0 - v * (math.log(x1) - math.log(x0)) / (x1 - x0)


@jit
def _clamped_slope(v, x0, x1, code, big):
    c = _secant_slope(v, x0, x1, code)
    if c == -np.inf:
        return -big
    if c == np.inf:
        return big
    return c


@jit
def _boxed_slope(c, i, m, blo, bhi, cbox):
    """The slope of level ``m`` under the box ``blo[i] <= u_i <= bhi[i]`` (grid indices):
    at least ``cbox`` towards the box outside it, unchanged inside (module Notes, *Boxes*)."""
    if m < blo[i]:
        return min(c, -cbox)  # u > grid[m] is forced
    if m >= bhi[i]:
        return max(c, cbox)  # u <= grid[m] is forced
    return c


@jit
def _build_first_round(v, lo, hi, grid, code, big, bw, nbr, rc, tr, nodes, blo, bhi, boxed,
                       cbox):  # fmt: skip
    """Capacities of a fresh level graph: every pixel cut at its interval's midpoint.

    Lists the undecided voxels in ``nodes``; returns their number."""
    n = 0
    for i in range(lo.shape[0]):
        tr[i] = 0.0
        for d in range(nbr.shape[0]):
            rc[i, d] = 0.0
        if lo[i] < 0 or lo[i] == hi[i]:
            continue  # padding or decided
        nodes[n] = i
        n += 1
        m = (lo[i] + hi[i]) // 2
        a = _clamped_slope(v[i], grid[m], grid[m + 1], code, big)
        if boxed:
            a = _boxed_slope(a, i, m, blo, bhi, cbox)
        for d in range(nbr.shape[0]):
            j = i + nbr[d]
            if lo[j] < 0:
                continue
            if lo[j] == lo[i]:
                rc[i, d] = bw[d]
            elif lo[j] > hi[i]:
                a -= bw[d]  # neighbour above: staying below costs beta*w
            else:
                a += bw[d]  # neighbour below: going above costs beta*w
        tr[i] = -a
    return n


@jit
def _reparametrise(v, lo, hi, grid, code, big, nbr, rev, rc, tr, parent, is_sink, first, last,
                   nodes, blo, bhi, boxed, cbox):  # fmt: skip
    """Turn the previous round's residual graph into the next round's (module Notes), for the
    undecided voxels whose interval starts in ``[first, last]``.

    The previous round's slope is recomputed, not stored (8 bytes per voxel less): its level
    is ``lo - 1`` for a voxel that went up (the source tree of the previous cut, which is still
    in place for these voxels) and ``hi`` for one that went down.

    Lists them in ``nodes``; returns their number.  Arcs to other groups are zeroed in both
    directions, so two threads may each prepare and solve their own groups at once."""
    n = 0
    for i in range(lo.shape[0]):
        if lo[i] < first or lo[i] > last or lo[i] == hi[i]:
            continue
        nodes[n] = i
        n += 1
        m = (lo[i] + hi[i]) // 2
        m_old = lo[i] - 1 if parent[i] != FREE and not is_sink[i] else hi[i]
        c = _clamped_slope(v[i], grid[m], grid[m + 1], code, big)
        c_old = _clamped_slope(v[i], grid[m_old], grid[m_old + 1], code, big)
        if boxed:
            c = _boxed_slope(c, i, m, blo, bhi, cbox)
            c_old = _boxed_slope(c_old, i, m_old, blo, bhi, cbox)
        tr[i] -= c - c_old
        for d in range(nbr.shape[0]):
            j = i + nbr[d]
            if lo[j] != lo[i]:  # arcs into the other half were saturated; drop the reverse
                rc[i, d] = 0.0
                rc[j, rev[d]] = 0.0
    return n


@jit
def _balanced(nodes, tr, share):
    """The excess and the deficit of ``nodes`` are within ``share`` of each other."""
    excess = 0.0
    deficit = 0.0
    for i in nodes:
        if tr[i] > 0.0:
            excess += tr[i]
        else:
            deficit -= tr[i]
    return min(excess, deficit) >= share * max(excess, deficit)


@jit
def _rebuild_fresh(nodes, v, lo, hi, grid, code, big, bw, nbr, rc, tr, blo, bhi, boxed,
                   cbox):  # fmt: skip
    """The capacities of ``nodes`` (whole groups) as a fresh round would set them: the flow
    the previous rounds left there is dropped."""
    for i in nodes:
        m = (lo[i] + hi[i]) // 2
        a = _clamped_slope(v[i], grid[m], grid[m + 1], code, big)
        if boxed:
            a = _boxed_slope(a, i, m, blo, bhi, cbox)
        for d in range(nbr.shape[0]):
            j = i + nbr[d]
            rc[i, d] = 0.0
            if lo[j] < 0:
                continue
            if lo[j] == lo[i] and hi[j] == hi[i]:
                rc[i, d] = bw[d]
            elif lo[j] > hi[i]:
                a -= bw[d]
            elif hi[j] < lo[i]:
                a += bw[d]
            elif lo[j] == hi[j]:  # decided inside i's interval: by its side of m
                a += -bw[d] if lo[j] > m else bw[d]
        tr[i] = -a


@jit
def _split_intervals(lo, hi, parent, is_sink, counts):
    """The source side of the cut (the source search tree: above the midpoint) keeps the upper
    half, the rest the lower half.

    ``counts[k]`` becomes the number of still undecided voxels whose interval starts at k."""
    counts[:] = 0
    for i in range(lo.shape[0]):
        if lo[i] >= 0 and lo[i] < hi[i]:
            m = (lo[i] + hi[i]) // 2
            if parent[i] != FREE and not is_sink[i]:
                lo[i] = m + 1
            else:
                hi[i] = m
            if lo[i] < hi[i]:
                counts[lo[i]] += 1


@jit
def _group_sizes(lo, hi, counts):
    """counts[k] = number of undecided voxels whose interval starts at k."""
    counts[:] = 0
    for i in range(lo.shape[0]):
        if lo[i] >= 0 and lo[i] < hi[i]:
            counts[lo[i]] += 1


@jit
def _finite_slope_bound(v, grid, code):
    """sum_s max_k |c_s(k)| over the finite slopes (monotone in k: check both ends)."""
    n_lev = grid.shape[0]
    k0 = 0
    while k0 < n_lev - 2 and grid[k0] < 0.0:
        k0 += 1
    total = 0.0
    for i in range(v.shape[0]):
        best = 0.0
        for k in (k0, k0 + 1, n_lev - 2):
            if k <= n_lev - 2:
                c = abs(_secant_slope(v[i], grid[k], grid[k + 1], code))
                if np.isfinite(c) and c > best:
                    best = c
        total += best
    return total


def _infinity_stand_in(image, grid, code, bw) -> float:
    """A finite capacity exceeding every finite cut of every round (module Notes, Poisson).

    A round's finite capacities are the unary terms, at most ``max_k |c_s(k)| + sum_d bw_d``
    per pixel, plus the pairwise arcs, at most ``sum_d bw_d`` per pixel."""
    if code != FIDELITY_CODE["poisson"] or len(grid) < 2:
        return np.inf  # never used: l1 and l2 slopes are finite
    v = np.asarray(image, dtype=np.float64).ravel()  # (a copy only for Poisson)
    total = _finite_slope_bound(v, grid, code) + 2.0 * float(np.sum(bw)) * v.size
    return 2.0 * total + 1.0


def _deal_groups(counts: np.ndarray, k: int) -> list[tuple[int, int]]:
    """Up to ``k`` runs ``(first, last)`` of consecutive interval starts holding about equal
    numbers of voxels, smallest first (``list.pop`` then takes the largest)."""
    cum = np.cumsum(counts)
    ends = np.searchsorted(cum, cum[-1] * np.arange(1, k + 1) / k)
    ends = np.unique(np.minimum(ends, len(counts) - 1))
    starts = np.concatenate([[0], ends[:-1] + 1])
    sizes = cum[ends] - np.concatenate([[0], cum[ends[:-1]]])
    order = np.argsort(sizes, kind="stable")
    return [(int(starts[j]), int(ends[j])) for j in order if sizes[j] > 0]


class _Dichotomy:
    """Padded work arrays shared by the rounds of one solve."""

    def __init__(self, image, beta, fidelity, connectivity, weights, spacing, grid,
                 bounds=None):  # fmt: skip
        shape = image.shape
        off = neighbour_offsets(image.ndim, connectivity)
        w = resolve_weights(image.ndim, connectivity, weights, spacing)
        self.shape = shape
        self.flow = st = GridFlowState(shape, off, queue_size=int(np.prod(shape)))
        self.pshape, self.inner, self.nbr, self.rev = st.pshape, st.inner, st.nbr, st.rev
        self.bw = beta * np.concatenate([w, w])
        n = int(np.prod(self.pshape))
        #: float32 data (float32 input, or integers of 16 bits or less) stay float32: the
        #: slopes are computed in float64 from them, the same numbers
        self.v = np.zeros(n, dtype=np.float32 if image.dtype == np.float32 else np.float64)
        self.v.reshape(self.pshape)[self.inner] = image
        self.lo = np.full(n, -1, dtype=np.int32)
        self.hi = np.full(n, -1, dtype=np.int32)
        self.grid = grid
        self.code = FIDELITY_CODE[fidelity]
        self.big = _infinity_stand_in(image, grid, self.code, self.bw)
        self.counts = np.zeros(len(grid), dtype=np.int64)
        #: grid-index box per voxel (module Notes, *Boxes*), forced by slopes of at least cbox
        self.boxed = bounds is not None
        self.cbox = 2.0 * float(np.sum(self.bw)) + 1.0
        if self.boxed:
            self.blo = np.zeros(n, dtype=np.int32)
            self.bhi = np.zeros(n, dtype=np.int32)
            self.blo.reshape(self.pshape)[self.inner] = bounds[0]
            self.bhi.reshape(self.pshape)[self.inner] = bounds[1]
        else:
            self.blo = self.bhi = np.zeros(1, dtype=np.int32)
        size = int(np.prod(shape))
        #: one node list and one pair of queues; threads take disjoint segments of them
        self.nodes = np.empty(size, dtype=st.queues.active.dtype)
        self.fresh = True

    def set_interval(self, lo: int, hi: int) -> None:
        self.lo.reshape(self.pshape)[self.inner] = lo
        self.hi.reshape(self.pshape)[self.inner] = hi
        _group_sizes(self.lo, self.hi, self.counts)
        self.fresh = True

    def _solve_chunk(self, first: int, last: int) -> None:
        """Prepare and solve the groups whose interval starts in ``[first, last]``, in the
        segment of the node list and queues that their voxels' count gives them (groups are
        listed in order of their interval: a run of them owns a run of the list)."""
        st = self.flow
        start = int(self.counts[:first].sum())
        stop = start + int(self.counts[first : last + 1].sum())
        nodes = self.nodes[start:stop]
        n = _reparametrise(self.v, self.lo, self.hi, self.grid, self.code, self.big, self.nbr,
                           self.rev, st.rc, st.tr, st.parent, st.is_sink, first, last, nodes,
                           self.blo, self.bhi, self.boxed, self.cbox)  # fmt: skip
        fresh = (int(self.counts[first : last + 1].max()) >= FRESH_MIN_NODES
                 and _balanced(nodes[:n], st.tr, FRESH_BALANCE))  # fmt: skip
        if fresh:
            _rebuild_fresh(nodes[:n], self.v, self.lo, self.hi, self.grid, self.code, self.big,
                           self.bw, self.nbr, st.rc, st.tr, self.blo, self.bhi,
                           self.boxed, self.cbox)  # fmt: skip
        if n:  # resumed from the previous round's residual graph, or fresh and routed
            st.maxflow(nodes[:n], st.queues.part(start, stop), route=fresh)

    def _solve_chunks(self, chunks: list, lock: threading.Lock) -> None:
        while True:
            with lock:
                if not chunks:
                    return
                first, last = chunks.pop()
            self._solve_chunk(first, last)

    def round(self, pool=None) -> int:
        """Cut every undecided interval at its midpoint; returns the number of groups cut.

        With a thread ``pool`` and at least two groups, the groups are dealt into ``CHUNKS``
        runs of about equal size, which two threads take, largest first, as they get free."""
        st = self.flow
        groups = int(np.count_nonzero(self.counts))
        if self.fresh:
            nodes = self.nodes
            n = _build_first_round(self.v, self.lo, self.hi, self.grid, self.code, self.big,
                                   self.bw, self.nbr, st.rc, st.tr, nodes,
                                   self.blo, self.bhi, self.boxed, self.cbox)  # fmt: skip
            self.fresh = False
            if n:
                st.maxflow(nodes[:n])
        else:
            if pool is not None and groups >= 2 and self.counts.sum() >= MIN_PARALLEL_VOXELS:
                chunks = _deal_groups(self.counts, CHUNKS)
                lock = threading.Lock()
                fut = pool.submit(self._solve_chunks, chunks, lock)
                self._solve_chunks(chunks, lock)
                fut.result()
            else:
                self._solve_chunk(0, len(self.grid) - 1)
        _split_intervals(self.lo, self.hi, st.parent, st.is_sink, self.counts)
        return groups

    def result(self) -> np.ndarray:
        """The lower ends of the intervals (the solution once the rounds are done), copied
        after the max-flow's arrays are released: the copy does not add to the peak."""
        self.flow = None
        return self.lo.reshape(self.pshape)[self.inner].copy()

    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        lo = self.lo.reshape(self.pshape)[self.inner].copy()
        hi = self.hi.reshape(self.pshape)[self.inner].copy()
        return lo, hi


def _check_common(image, beta, fidelity, connectivity, weights, spacing, levels):
    arr = as_float_array(image, "image")
    beta = check_real("beta", beta, minimum=0.0)
    check_fidelity_data(arr, fidelity)
    check_spacing(spacing, arr.ndim)
    resolve_weights(arr.ndim, connectivity, weights, spacing)  # validates both
    grid = level_grid(image, levels)  # the raw dtype decides the default grid
    if fidelity == "poisson" and float(np.max(arr)) > 0 and not grid[-1] > 0:
        raise ValueError(
            "levels must include a value > 0 for fidelity='poisson' and an image with "
            f"positive counts (u - v log u is infinite at u <= 0 < v), got levels from "
            f"{grid[0]:g} to {grid[-1]:g}"
        )
    return arr, beta, grid


def _run_rounds(dic, n_rounds, extra, history, callback, t0, pool) -> bool:
    """The dichotomy's rounds; fills ``extra``/``history``; True if the callback cancelled."""
    for r in range(1, n_rounds + 1):
        tr0 = time.perf_counter()
        groups = dic.round(pool)
        extra["round_times"].append(time.perf_counter() - tr0)
        extra["rounds"] = r
        extra["cuts"] += 1 if groups else 0
        extra["groups"] += groups
        elapsed = time.perf_counter() - t0
        history.append({"round": r, "cuts": extra["cuts"], "elapsed": elapsed})
        if "trace" in extra:
            extra["trace"].append(dic.interval())
        if callback is not None and r < n_rounds:
            info = {"method": "exact", "iter": r, "max_iter": n_rounds,
                    "fraction": r / n_rounds, "elapsed": elapsed, "groups": groups,
                    "energy": float("nan"), "gap": float("nan")}  # fmt: skip
            if callback(info):
                return True
    return False


def solve_indices(arr, beta, grid, *, fidelity="l2", connectivity=1, weights=None,
                  spacing=None, bounds=None, callback=None, extra=None, history=None, t0=None,
                  threads=None):  # fmt: skip
    """The dichotomy on checked input (:func:`solve_exact`): the grid index of the minimiser
    with the smallest upper level sets, and whether ``callback`` cancelled.

    ``bounds = (lower, upper)``, int arrays of ``arr``'s shape, restricts voxel ``s`` to the
    grid indices ``lower[s] .. upper[s]`` (module Notes, *Boxes*; ``lower == upper`` fixes
    it).  ``threads`` defaults to :data:`THREADS`."""
    extra = {"rounds": 0, "cuts": 0, "groups": 0, "round_times": []} if extra is None else extra
    history = [] if history is None else history
    t0 = time.perf_counter() if t0 is None else t0
    threads = THREADS if threads is None else threads
    n_levels = len(grid)
    if n_levels == 1:
        return np.zeros(arr.shape, dtype=np.int32), False
    n_rounds = math.ceil(math.log2(n_levels))
    dic = _Dichotomy(arr, beta, fidelity, connectivity, weights, spacing, grid, bounds)
    dic.set_interval(0, n_levels - 1)
    if threads > 1 and arr.size >= MIN_PARALLEL_VOXELS:
        with ThreadPoolExecutor(max_workers=threads - 1) as pool:
            cancelled = _run_rounds(dic, n_rounds, extra, history, callback, t0, pool)
    else:
        cancelled = _run_rounds(dic, n_rounds, extra, history, callback, t0, None)
    return dic.result(), cancelled


def solve_exact(
    image,
    beta: float,
    *,
    fidelity: str = "l2",
    connectivity: int = 1,
    weights: float | Sequence[float] | np.ndarray | None = None,
    spacing: float | Sequence[float] | None = None,
    levels: int | Sequence[float] | np.ndarray | None = None,
    callback: Callable[[dict], bool] | None = None,
    trace: bool = False,
) -> TVResult:
    r"""Exact minimiser of the graph-TV energy over a grid of grey levels (Darbon–Sigelle).

    Parameters
    ----------
    image : array_like, 1-D, 2-D or 3-D
        The data ``v``.
    beta : float
        Regularisation weight ``>= 0``.
    fidelity : {"l2", "l1", "poisson"}
        ``½(u−v)²``, ``|u−v|`` or ``u − v log u`` (see :mod:`napari_tv.fidelity`).
    connectivity : int
        Neighbourhood of the graph TV (:func:`napari_tv.operators.neighbour_offsets`).
    weights : None, float or sequence of float
        Edge weights (:func:`napari_tv.operators.resolve_weights`; None: the defaults, which
        follow ``spacing``).
    spacing : float or sequence of float, optional
        Voxel size per axis, used by the default weights.
    levels : None, int or sequence of float
        The grid of grey levels the solution lives on (:func:`napari_tv.operators.level_grid`):
        the dispatcher passes the resolved grid.
    callback : callable, optional
        ``callback(info) -> bool`` once per round with ``info = {"method": "exact", "iter",
        "max_iter", "fraction", "elapsed", "groups", "energy": nan, "gap": nan}``; returning
        True stops and returns each pixel's lowest still-possible grey level
        (``cancelled=True``).
    trace : bool
        Keep the interval partition after every round in ``extra["trace"]``.

    Returns
    -------
    TVResult
        ``u`` on the grid (float32 for float32 input, else float64); ``energy`` =
        ``tv_energy(u, image, beta, fidelity=..., connectivity=..., weights=..., spacing=...)``;
        ``n_iter`` = rounds; ``extra`` = ``{"levels", "rounds", "cuts", "groups",
        "round_times"}`` and ``"trace"`` (list of ``(lo, hi)`` int32 index arrays) if asked.

    Raises
    ------
    ValueError, TypeError
        On invalid arguments (messages name the parameter).

    Notes
    -----
    One max-flow per round, ``ceil(log2 L)`` rounds; each round cuts every group of pixels
    sharing an interval at its own midpoint.  The argument that this is exact, and why edges
    between groups become unary terms, is in the module docstring of
    :mod:`napari_tv.solvers.exact`.  The returned ``u`` is the minimiser with the smallest
    upper level sets.

    References
    ----------
    .. [1] J. Darbon and M. Sigelle, J. Math. Imaging Vision 26(3), 261–276, 2006.

    Examples
    --------
    >>> import numpy as np
    >>> res = solve_exact(np.array([0.0, 3.0]), 1.0, levels=[0, 1, 2, 3])
    >>> res.u, res.energy, res.n_iter
    (array([1., 2.]), 2.0, 2)
    """
    t0 = time.perf_counter()
    arr, beta, grid = _check_common(image, beta, fidelity, connectivity, weights, spacing, levels)
    out_dtype = np.float32 if arr.dtype == np.float32 else np.float64
    n_levels = len(grid)
    n_rounds = math.ceil(math.log2(n_levels)) if n_levels > 1 else 0
    extra: dict = {"levels": grid, "rounds": 0, "cuts": 0, "groups": 0, "round_times": []}
    if trace:
        extra["trace"] = []
    history: list[dict] = []
    lo, cancelled = solve_indices(arr, beta, grid, fidelity=fidelity, connectivity=connectivity,
                                  weights=weights, spacing=spacing, callback=callback,
                                  extra=extra, history=history, t0=t0)  # fmt: skip
    u = grid[lo].astype(out_dtype)
    energy = tv_energy(u, arr, beta, fidelity=fidelity, connectivity=connectivity,
                       weights=weights, spacing=spacing)  # fmt: skip
    elapsed = time.perf_counter() - t0
    if callback is not None and not cancelled:
        callback({"method": "exact", "iter": extra["rounds"], "max_iter": n_rounds,
                  "fraction": 1.0, "elapsed": elapsed, "groups": 0, "energy": energy,
                  "gap": 0.0})  # fmt: skip
    return TVResult(
        u=u, energy=energy, n_iter=extra["rounds"], converged=not cancelled,
        gap=float("nan") if cancelled else 0.0, history=history, elapsed=elapsed,
        method="exact", cancelled=cancelled, extra=extra,
    )  # fmt: skip


def solve_level(
    image,
    beta: float,
    level: int,
    *,
    fidelity: str = "l2",
    connectivity: int = 1,
    weights: float | Sequence[float] | np.ndarray | None = None,
    spacing: float | Sequence[float] | None = None,
    levels: int | Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    r"""One binary level problem of the coarea decomposition, solved by one min cut.

    Parameters
    ----------
    image, beta, fidelity, connectivity, weights, spacing, levels
        As in :func:`solve_exact`.
    level : int
        Index ``k`` into the grid, ``0 <= k <= L - 1``.

    Returns
    -------
    ndarray of bool, shape of ``image``
        :math:`1[u_s \le \lambda_k]` for the largest minimiser of
        :math:`E^k(x) = \sum_s c_s(k) x_s + \beta\sum w_{st}|x_s - x_t|` with
        :math:`x = 1 - u^\lambda` (module Notes); equal to ``solve_exact(...).u <= grid[k]``.
        All True for ``k = L - 1``.

    Raises
    ------
    ValueError
        If ``level`` is outside the grid.

    Notes
    -----
    The returned sets nest: ``solve_level(.., k) <= solve_level(.., l)`` for ``k < l``
    (Darbon–Sigelle's monotone property, proved in the module Notes).

    Examples
    --------
    >>> import numpy as np
    >>> solve_level(np.array([0.0, 3.0]), 1.0, 1, levels=[0, 1, 2, 3]).tolist()
    [True, False]
    """
    arr, beta, grid = _check_common(image, beta, fidelity, connectivity, weights, spacing, levels)
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
        raise TypeError(f"level must be an integer grid index, got {level!r}")
    if not 0 <= level < len(grid):
        raise ValueError(f"level must be in [0, {len(grid) - 1}], got {level}")
    if level == len(grid) - 1:
        return np.ones(arr.shape, dtype=bool)
    dic = _Dichotomy(arr, beta, fidelity, connectivity, weights, spacing, grid)
    dic.set_interval(level, level + 1)  # every pixel cut at m = level, one group
    dic.round()
    return dic.interval()[1] == level


def warm(dtype) -> None:
    """Run the exact solver (every fidelity and connectivity, 2-D and 3-D) on tiny images of
    ``dtype`` (``napari_tv._compile``)."""
    for shape in ((6, 5), (3, 4, 5)):
        v = np.linspace(0.0, 3.0, int(np.prod(shape))).reshape(shape).astype(dtype)
        for fidelity in ("l2", "l1", "poisson"):
            for connectivity in range(1, len(shape) + 1):
                solve_exact(v, 0.5, fidelity=fidelity, connectivity=connectivity, levels=8)
