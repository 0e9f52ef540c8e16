"""Minimum s–t cut / maximum flow on an implicit n-D grid graph (Boykov–Kolmogorov, Numba).

The graph is never stored as an edge list.  Its nodes are the voxels of a 1-, 2- or 3-D grid,
padded by one voxel on every side so that every neighbour index of a real voxel is a valid
array index; the neighbours of a voxel are found by adding a fixed flat index offset per
*direction*.  With ``K`` unordered neighbour offsets ``o_k`` (``operators.neighbour_offsets``),
there are ``2K`` directions: ``d < K`` points to ``s + o_d`` and ``d >= K`` to ``s - o_{d-K}``;
direction ``d`` and ``rev(d) = d ± K`` are the two arcs of one grid edge.

Memory per (padded) voxel, with ``2K`` directions (4 for 2-D connectivity 1, 8 for 2-D
connectivity 2, 6/18/26 in 3-D):

==============  =========  =====================================================
array           bytes      meaning
==============  =========  =====================================================
``rc``          ``16 K``   residual capacity of the arc leaving the voxel in each direction
``tr``          8          net terminal residual (> 0: from the source, < 0: to the sink)
``parent``      1          direction to the parent in the search tree, or free / terminal / orphan
``is_sink``     1          which search tree the voxel belongs to
``ts``, dist    4 + 4      Kolmogorov's time stamp and distance-to-terminal heuristic
queues          4 + 4 + 1  FIFO of active voxels, deque of orphans, "is active" flag
==============  =========  =====================================================

i.e. ``16K + 27`` bytes: 59 B per pixel in 2-D (connectivity 1), 75 B per voxel in 3-D
(connectivity 1).  The queues hold int32 indices below 2**31 voxels (:func:`index_dtype`),
int64 above.

The algorithm is that of Boykov & Kolmogorov [1]_ (two search trees grown from the terminals,
augmentation along the found path, adoption of orphans with the time-stamp / distance
heuristic of their ``maxflow-v3`` code).  At termination the source tree is exactly the set of
voxels reachable from the source in the residual graph: the *smallest* source side of a
minimum cut, which is what ``maxflow_grid`` returns.

References
----------
.. [1] Y. Boykov and V. Kolmogorov, "An experimental comparison of min-cut/max-flow algorithms
   for energy minimization in vision", IEEE TPAMI 26(9), 1124–1137, 2004.
"""

from __future__ import annotations

import numpy as np

from napari_tv._config import inline, jit
from napari_tv._validation import as_float_array
from napari_tv.operators import edge_slices, neighbour_offsets

__all__ = ["FlowQueues", "GridFlowState", "cut_value", "maxflow_grid"]

#: routing sweeps before the search trees (``_route_excess``): at most this many, while one
#: cancels at least ``ROUTE_GAIN`` of the excess left, and only with ``ROUTE_MIN_NODES`` nodes
#: in excess or more (below that the trees are cheap)
ROUTE_SWEEPS = 40
ROUTE_GAIN = 0.002
ROUTE_MIN_NODES = 4096
ROUTE_BALANCE = 0.8
UNREACHED = np.int32(2**30)
FREE = np.int8(-1)  # not in a search tree
TERMINAL = np.int8(100)  # parent is the source or the sink
ORPHAN = np.int8(101)  # lost its parent arc during an augmentation


# --------------------------------------------------------------------------- grid geometry


def padded_geometry(shape: tuple[int, ...], offsets: np.ndarray):
    """Padded shape, flat offset per direction (2K,) and reverse direction per direction."""
    pshape = tuple(n + 2 for n in shape)
    strides = np.ones(len(shape), dtype=np.int64)
    for a in range(len(shape) - 2, -1, -1):
        strides[a] = strides[a + 1] * pshape[a + 1]
    flat = offsets.astype(np.int64) @ strides
    nbr = np.concatenate([flat, -flat]).astype(np.int64)
    k = len(offsets)
    rev = np.concatenate([np.arange(k, 2 * k), np.arange(k)]).astype(np.int64)
    return pshape, nbr, rev


def interior(shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Slices selecting the real voxels inside the padded array."""
    return tuple(slice(1, n + 1) for n in shape)


def index_dtype(n: int) -> np.dtype:
    """The dtype of flat indices into ``n`` voxels: int32 below 2**31 voxels (half the memory
    of int64 for node lists and queues), else int64."""
    return np.dtype(np.int32) if n < 2**31 else np.dtype(np.int64)


class FlowQueues:
    """The queues of one max-flow search over at most ``size`` nodes: the FIFO of active
    nodes, the deque of orphans and their heads and counts (``state``).  One per thread that
    runs a flow at the same time as another (:meth:`GridFlowState.maxflow`); :meth:`part`
    gives a thread its own segment of one pair of arrays."""

    __slots__ = ("active", "orphans", "state")

    def __init__(self, size: int, dtype=np.int64):
        self.active = np.empty(size, dtype=dtype)
        self.orphans = np.empty(size, dtype=dtype)
        self.state = np.zeros(4, dtype=np.int64)  # active head, count; orphan head, count

    def part(self, start: int, stop: int) -> FlowQueues:
        """Queues over ``active[start:stop]`` and ``orphans[start:stop]`` (views), with a state
        of their own: threads given disjoint segments never touch each other's entries."""
        out = FlowQueues.__new__(FlowQueues)
        out.active, out.orphans = self.active[start:stop], self.orphans[start:stop]
        out.state = np.zeros(4, dtype=np.int64)
        return out


class GridFlowState:
    """The residual graph and the search trees of max-flows on one padded grid.

    The model is PyMaxflow's ``Graph.maxflow(reuse_trees=True)``: set the capacities, call
    :meth:`maxflow`, change some capacities, call it again: the flow already pushed stays,
    and only what the change allows is pushed on top of it.

    Parameters
    ----------
    shape : tuple of int
        The grid (1-, 2- or 3-D), padded by one voxel on every side.
    offsets : ndarray of int, shape (K, ndim)
        The neighbour offsets (``operators.neighbour_offsets``).
    queue_size : int, optional
        Entries of :attr:`queues` (default: every padded voxel); at least the number of nodes
        any :meth:`maxflow` call searches.

    Attributes
    ----------
    pshape, inner : tuple
        The padded shape, and the slices of the real voxels in it.
    nbr, rev : ndarray of int64, shape (2K,)
        Per direction: the flat index offset, and the reverse direction.
    rc : ndarray of float64, shape (n, 2K)
        Residual capacity of the arc leaving each padded voxel (flat index) in each direction.
    tr : ndarray of float64, shape (n,)
        Net terminal residual per voxel (> 0: from the source, < 0: to the sink).
    queues : FlowQueues
        The queues :meth:`maxflow` uses unless given others.

    ``rc`` and ``tr`` are the caller's to write before a flow and between flows; the search
    trees are this class's own (:meth:`source_side` reads them).
    """

    def __init__(self, shape: tuple[int, ...], offsets: np.ndarray, queue_size: int | None = None):
        self.pshape, self.nbr, self.rev = padded_geometry(tuple(shape), np.asarray(offsets))
        self.inner = interior(tuple(shape))
        n = int(np.prod(self.pshape))
        self.rc = np.zeros((n, len(self.nbr)), dtype=np.float64)
        self.tr = np.zeros(n, dtype=np.float64)
        self.parent = np.full(n, FREE, dtype=np.int8)
        self.is_sink = np.zeros(n, dtype=np.bool_)
        self.ts = np.zeros(n, dtype=np.int32)
        self.dist = np.zeros(n, dtype=np.int32)
        self.in_active = np.zeros(n, dtype=np.bool_)
        self.queues = FlowQueues(n if queue_size is None else queue_size, index_dtype(n))

    def maxflow(self, nodes: np.ndarray | None = None, queues: FlowQueues | None = None,
                route: bool = False) -> float:  # fmt: skip
        """Push flow from the current residual graph (``rc``, ``tr``) until no augmenting path
        is left; returns the flow pushed by this call (without terminal constants).

        Only ``nodes`` (flat indices, default: all) are searched, their trees rebuilt from
        their terminal arcs: every arc with positive residual capacity must join two of them.
        Flows over disjoint node sets, with no positive arc between the sets, may run in two
        threads at once, each with its own ``queues`` (at least ``len(nodes)`` entries;
        default: :attr:`queues`).  The search trees stay in place for :meth:`source_side`.

        ``route``: first carry excess to deficits in breadth-first sweeps (``_route_excess``),
        when excess and deficit are nearly balanced; measured to pay on fresh capacities over
        a large plateau (2x on the hardest cut of a 128³ volume), and to cost on a residual
        graph resumed from an earlier flow."""
        if nodes is None:
            nodes = np.arange(len(self.tr), dtype=self.queues.active.dtype)
        q = self.queues if queues is None else queues
        return _bk_maxflow(
            nodes, self.rc, self.tr, self.nbr, self.rev, self.parent, self.is_sink, self.ts,
            self.dist, q.active, self.in_active, q.orphans, q.state,
            ROUTE_MIN_NODES if route else -1, ROUTE_BALANCE,
        )  # fmt: skip

    def source_side(self, out: np.ndarray | None = None) -> np.ndarray:
        """Flat bool array (into ``out`` if given): the voxel is in the source tree, i.e. on
        the smallest source side of a minimum cut after :meth:`maxflow`."""
        out = np.empty(self.parent.shape, dtype=np.bool_) if out is None else out
        np.not_equal(self.parent, FREE, out=out)
        out &= ~self.is_sink
        return out


# --------------------------------------------------------------------------- kernels

#: the helpers below run in the inner loop and are inlined at Numba-IR level (measured: the
#: whole max-flow 1.5x faster on a camera 512² L1 round)
inline_jit = inline


@inline_jit
def _push_rear(i, queue, qstate, h):
    """Append ``i`` to the circular ``queue`` whose head and count are ``qstate[h]`` and
    ``qstate[h + 1]`` (h = 0: the active nodes, 2: the orphans)."""
    k = qstate[h] + qstate[h + 1]
    if k >= queue.shape[0]:
        k -= queue.shape[0]
    queue[k] = i
    qstate[h + 1] += 1


@inline_jit
def _pop_front(queue, qstate, h):
    """Remove and return the first entry of the circular ``queue`` (see ``_push_rear``)."""
    i = queue[qstate[h]]
    qstate[h] += 1
    if qstate[h] == queue.shape[0]:
        qstate[h] = 0
    qstate[h + 1] -= 1
    return i


@inline_jit
def _push_active(i, active, in_active, qstate):
    if not in_active[i]:
        in_active[i] = True
        _push_rear(i, active, qstate, 0)


@inline_jit
def _next_active(parent, active, in_active, qstate):
    while qstate[1] > 0:
        i = _pop_front(active, qstate, 0)
        in_active[i] = False
        if parent[i] != FREE:
            return i
    return -1


@inline_jit
def _orphan_front(i, parent, orphans, qstate):
    parent[i] = ORPHAN
    qstate[2] = (qstate[2] if qstate[2] > 0 else orphans.shape[0]) - 1
    orphans[qstate[2]] = i
    qstate[3] += 1


@inline_jit
def _orphan_rear(i, parent, orphans, qstate):
    parent[i] = ORPHAN
    _push_rear(i, orphans, qstate, 2)


@inline_jit
def _bottleneck(ai, ad, rc, tr, nbr, rev, parent):
    """Residual capacity of the source→sink path through arc (ai, ad)."""
    b = rc[ai, ad]
    x = ai
    while parent[x] != TERMINAL:  # source side: arcs parent -> x
        p = parent[x]
        y = x + nbr[p]
        b = min(b, rc[y, rev[p]])
        x = y
    b = min(b, tr[x])
    x = ai + nbr[ad]
    while parent[x] != TERMINAL:  # sink side: arcs x -> parent
        p = parent[x]
        b = min(b, rc[x, p])
        x = x + nbr[p]
    return min(b, -tr[x])


@inline_jit
def _augment(ai, ad, rc, tr, nbr, rev, parent, orphans, qstate):
    """Push the bottleneck along the path; saturated tree arcs make orphans."""
    b = _bottleneck(ai, ad, rc, tr, nbr, rev, parent)
    rc[ai, ad] -= b
    rc[ai + nbr[ad], rev[ad]] += b
    x = ai
    while True:
        p = parent[x]
        if p == TERMINAL:
            tr[x] -= b
            if tr[x] == 0.0:
                _orphan_front(x, parent, orphans, qstate)
            break
        y = x + nbr[p]
        rc[x, p] += b
        rc[y, rev[p]] -= b
        if rc[y, rev[p]] == 0.0:
            _orphan_front(x, parent, orphans, qstate)
        x = y
    x = ai + nbr[ad]
    while True:
        p = parent[x]
        if p == TERMINAL:
            tr[x] += b
            if tr[x] == 0.0:
                _orphan_front(x, parent, orphans, qstate)
            break
        y = x + nbr[p]
        rc[x, p] -= b
        rc[y, rev[p]] += b
        if rc[x, p] == 0.0:
            _orphan_front(x, parent, orphans, qstate)
        x = y
    return b


@inline_jit
def _origin_distance(j, time, nbr, parent, ts, dist):
    """Distance of tree node j to its terminal, or -1 if it hangs from an orphan."""
    d = 0
    x = j
    while True:
        if ts[x] == time:
            d += dist[x]
            break
        p = parent[x]
        d += 1
        if p == TERMINAL:
            ts[x] = time
            dist[x] = 1
            break
        if p == ORPHAN:
            return -1
        x = x + nbr[p]
    # mark the path so later walks stop early
    x = j
    dd = d
    while ts[x] != time:
        ts[x] = time
        dist[x] = dd
        dd -= 1
        x = x + nbr[parent[x]]
    return d


@inline_jit
def _adopt(i, time, rc, nbr, rev, parent, is_sink, ts, dist, active, in_active, orphans, qstate):
    """Find orphan i a new parent in its own tree, or free it and orphan its children."""
    sink = is_sink[i]
    best = -1
    dmin = np.int64(1) << 40
    for d in range(nbr.shape[0]):
        j = i + nbr[d]
        cap = rc[i, d] if sink else rc[j, rev[d]]  # arc i->j (sink tree) / j->i (source tree)
        if cap > 0.0 and parent[j] != FREE and is_sink[j] == sink:
            dj = _origin_distance(j, time, nbr, parent, ts, dist)
            if dj >= 0 and dj < dmin:
                best = d
                dmin = dj
    if best >= 0:
        parent[i] = best
        ts[i] = time
        dist[i] = dmin + 1
        return
    parent[i] = FREE
    for d in range(nbr.shape[0]):
        j = i + nbr[d]
        if parent[j] != FREE and is_sink[j] == sink:
            cap = rc[i, d] if sink else rc[j, rev[d]]
            if cap > 0.0:
                _push_active(j, active, in_active, qstate)
            p = parent[j]
            if p != TERMINAL and p != ORPHAN and j + nbr[p] == i:
                _orphan_rear(j, parent, orphans, qstate)


@inline_jit
def _grow(i, rc, nbr, rev, parent, is_sink, ts, dist, active, in_active, qstate):
    """Grow i's tree by one layer; return (source node, direction) of a path arc or (-1, -1)."""
    sink = is_sink[i]
    for d in range(nbr.shape[0]):
        j = i + nbr[d]
        cap = rc[j, rev[d]] if sink else rc[i, d]
        if cap > 0.0:
            if parent[j] == FREE:
                is_sink[j] = sink
                parent[j] = rev[d]
                ts[j] = ts[i]
                dist[j] = dist[i] + 1
                _push_active(j, active, in_active, qstate)
            elif is_sink[j] != sink:
                return (j, rev[d]) if sink else (i, d)
            elif ts[j] <= ts[i] and dist[j] > dist[i]:
                parent[j] = rev[d]
                ts[j] = ts[i]
                dist[j] = dist[i] + 1
    return (-1, -1)


@inline_jit
def _push_short_paths(nodes, rc, tr, nbr, rev):
    """Saturate the paths source → i → j → sink of one arc, greedily; returns the flow.

    One pass over the nodes, no search trees: a node left with ``tr = 0`` then starts the
    search free instead of as a root that an augmentation would orphan (L1 rounds, where
    nearly every voxel has a terminal arc, run ~1.2x faster)."""
    flow = 0.0
    for i in nodes:
        if tr[i] <= 0.0:
            continue
        for d in range(nbr.shape[0]):
            j = i + nbr[d]
            if tr[j] < 0.0 and rc[i, d] > 0.0:
                b = min(tr[i], rc[i, d], -tr[j])
                rc[i, d] -= b
                rc[j, rev[d]] += b
                tr[i] -= b
                tr[j] += b
                flow += b
                if tr[i] == 0.0:
                    break
    return flow


@inline_jit
def _deficit_distances(nodes, rc, tr, nbr, rev, label, order):
    """Breadth-first search backwards from every node with ``tr < 0`` (a deficit) along
    residual arcs: ``label`` = the arcs from a node to its nearest deficit (``UNREACHED`` if
    none), ``order`` = the labelled nodes by increasing label; returns their number."""
    for i in nodes:
        label[i] = UNREACHED
    tail = 0
    for i in nodes:
        if tr[i] < 0.0:
            label[i] = 0
            order[tail] = i
            tail += 1
    head = 0
    while head < tail:
        x = order[head]
        head += 1
        lx = label[x] + 1
        for d in range(nbr.shape[0]):
            i = x + nbr[d]
            if label[i] == UNREACHED and rc[i, rev[d]] > 0.0:
                label[i] = lx
                order[tail] = i
                tail += 1
    return tail


@inline_jit
def _discharge_downhill(order, n, rc, tr, nbr, rev, label):
    """Push every node's excess (``tr > 0``) one arc down ``label``, highest labels first, so
    that excess travels all the way to a deficit in one sweep where the arcs allow; returns
    the flow that reached deficits."""
    flow = 0.0
    for k in range(n - 1, -1, -1):
        i = order[k]
        e = tr[i]
        if e <= 0.0:
            continue
        below = label[i] - 1
        for d in range(nbr.shape[0]):
            j = i + nbr[d]
            if label[j] == below and rc[i, d] > 0.0:
                b = min(e, rc[i, d])
                if tr[j] < 0.0:
                    flow += min(b, -tr[j])
                rc[i, d] -= b
                rc[j, rev[d]] += b
                tr[j] += b
                e -= b
                if e <= 0.0:
                    break
        tr[i] = e
    return flow


@inline_jit
def _route_excess(nodes, rc, tr, nbr, rev, label, order, min_nodes, balance):
    """Before the search trees: route excess to deficits along shortest residual paths, in
    sweeps (a breadth-first search from the deficits, then every excess pushed downhill), while
    a sweep cancels at least ``ROUTE_GAIN`` of the excess left.  Each push is a partial
    augmentation source -> i -> j, so the residual graph stays valid for the search that
    finishes the flow; where excess must cross a whole plateau the searches' augmenting paths
    are long and their trees costly, and these sweeps carry most of it first."""
    excess = 0.0
    deficit = 0.0
    n_excess = 0
    for i in nodes:
        if tr[i] > 0.0:
            excess += tr[i]
            n_excess += 1
        else:
            deficit -= tr[i]
    flow = 0.0
    if n_excess < min_nodes or min(excess, deficit) < balance * max(excess, deficit):
        return flow
    for _ in range(ROUTE_SWEEPS):
        n = _deficit_distances(nodes, rc, tr, nbr, rev, label, order)
        moved = _discharge_downhill(order, n, rc, tr, nbr, rev, label)
        flow += moved
        if moved < ROUTE_GAIN * excess:
            break
    return flow


@inline_jit
def _can_grow(i, rc, tr, nbr, rev):
    """Root i has a residual arc (in its tree's direction) to a voxel that is not a root of
    its own tree.  A root without one starts passive: every voxel it could reach is already
    in its tree, and an adoption that frees such a neighbour re-activates it (as in [1]_)."""
    sink = tr[i] < 0.0
    for d in range(nbr.shape[0]):
        j = i + nbr[d]
        cap = rc[j, rev[d]] if sink else rc[i, d]
        if cap > 0.0 and (tr[j] == 0.0 or (tr[j] < 0.0) != sink):
            return True
    return False


@jit
def _bk_maxflow(nodes, rc, tr, nbr, rev, parent, is_sink, ts, dist, active, in_active, orphans,
                qstate, route_min, route_balance):  # fmt: skip
    """Boykov–Kolmogorov max-flow over ``nodes``; returns the flow pushed (terminal constants
    excluded).  ``active`` and ``orphans`` are queues of at least ``len(nodes)`` entries."""
    qstate[:] = 0
    flow = _push_short_paths(nodes, rc, tr, nbr, rev)
    if route_min >= 0:  # (dist and active are re-set below)
        flow += _route_excess(nodes, rc, tr, nbr, rev, dist, active, route_min, route_balance)
    for i in nodes:
        in_active[i] = False
        ts[i] = 0
        if tr[i] != 0.0:
            is_sink[i] = tr[i] < 0.0
            parent[i] = TERMINAL
            dist[i] = 1
            if _can_grow(i, rc, tr, nbr, rev):
                _push_active(i, active, in_active, qstate)
        else:
            parent[i] = FREE
    time = 0
    cur = -1
    while True:
        i = cur
        if i >= 0:
            in_active[i] = False
            if parent[i] == FREE:
                i = -1
        if i < 0:
            i = _next_active(parent, active, in_active, qstate)
            if i < 0:
                break
        ai, ad = _grow(i, rc, nbr, rev, parent, is_sink, ts, dist, active, in_active, qstate)
        time += 1
        if ai < 0:
            cur = -1
            continue
        in_active[i] = True  # keep i current: it may have further paths
        cur = i
        flow += _augment(ai, ad, rc, tr, nbr, rev, parent, orphans, qstate)
        while qstate[3] > 0:
            o = _pop_front(orphans, qstate, 2)
            _adopt(o, time, rc, nbr, rev, parent, is_sink, ts, dist,
                   active, in_active, orphans, qstate)  # fmt: skip
    return flow


@jit
def _drop_outer_arcs(rc, nbr, inside):
    """Zero every arc whose head is a padding voxel (or whose tail is one)."""
    for i in range(rc.shape[0]):
        for d in range(nbr.shape[0]):
            if not inside[i]:
                rc[i, d] = 0.0
            elif not inside[i + nbr[d]]:
                rc[i, d] = 0.0


# --------------------------------------------------------------------------- public API


def _resolve_offsets(ndim: int, offsets, connectivity: int) -> np.ndarray:
    if offsets is None:
        return np.asarray(neighbour_offsets(ndim, connectivity), dtype=np.int64)
    off = np.asarray(offsets, dtype=np.int64)
    if off.ndim != 2 or off.shape[1] != ndim or len(off) == 0:
        raise ValueError(f"offsets must have shape (K, {ndim}), got {off.shape}")
    if np.abs(off).max() > 1 or (off == 0).all(axis=1).any():
        raise ValueError(f"offsets must be non-zero vectors with entries in -1, 0, 1, got {off}")
    return off


def maxflow_grid(
    capacities,
    source_caps,
    sink_caps,
    *,
    connectivity: int = 1,
    offsets=None,
) -> tuple[float, np.ndarray]:
    """Maximum flow and minimum cut of a grid graph (Boykov–Kolmogorov, Numba).

    Parameters
    ----------
    capacities : array_like, shape (K, *shape) or (2K, *shape)
        Edge capacities.  With ``K`` rows, row ``k`` at voxel ``s`` is the capacity of both arcs
        between ``s`` and ``s + o_k``.  With ``2K`` rows, row ``d`` at voxel ``s`` is the capacity
        of the arc leaving ``s`` towards ``s + o_d`` (``d < K``) or ``s - o_{d-K}`` (``d >= K``).
        Arcs that would leave the grid are ignored.  Must be finite and ``>= 0``.
    source_caps, sink_caps : array_like, shape ``shape``
        Terminal capacities (source → voxel, voxel → sink), finite and ``>= 0``.
    connectivity : int, optional
        Neighbourhood when ``offsets`` is None (``operators.neighbour_offsets``).
    offsets : array_like of int, shape (K, ndim), optional
        Explicit neighbour offsets (entries in -1, 0, 1).

    Returns
    -------
    flow : float
        Maximum flow value = minimum cut value (including ``sum(min(source, sink))``).
    source_set : ndarray of bool, shape ``shape``
        The smallest source side of a minimum cut: voxels reachable from the source in the
        residual graph.

    Raises
    ------
    ValueError
        On shapes that do not match or negative / non-finite capacities.

    Notes
    -----
    The cut value of a source side :math:`S` is
    :math:`\\sum_{s \\notin S} c_{\\mathrm{src},s} + \\sum_{s\\in S} c_{s,\\mathrm{snk}}
    + \\sum_{s\\in S, t\\notin S} c_{st}`; :func:`cut_value` evaluates it.  As in Kolmogorov's
    ``add_tweights``, only the net terminal capacity enters the search; the common part
    :math:`\\min(c_{\\mathrm{src},s}, c_{s,\\mathrm{snk}})` is added to the flow directly.

    References
    ----------
    .. [1] Y. Boykov and V. Kolmogorov, IEEE TPAMI 26(9), 1124–1137, 2004.

    Examples
    --------
    Two voxels joined by an edge of capacity 1: source 3 → a, b → sink 2.

    >>> import numpy as np
    >>> flow, src = maxflow_grid(np.array([[1.0, 0.0]]), [3.0, 0.0], [0.0, 2.0], offsets=[[1]])
    >>> flow, src.tolist()
    (1.0, [True, False])
    """
    src = as_float_array(source_caps, "source_caps").astype(np.float64)
    snk = as_float_array(sink_caps, "sink_caps").astype(np.float64)
    if src.shape != snk.shape:
        raise ValueError(f"sink_caps must have shape {src.shape}, got {snk.shape}")
    shape = src.shape
    off = _resolve_offsets(len(shape), offsets, connectivity)
    k = len(off)
    caps = as_float_array(capacities, "capacities", ndims=(len(shape) + 1,))
    if caps.shape[1:] != shape or caps.shape[0] not in (k, 2 * k):
        raise ValueError(f"capacities must have shape ({k} or {2 * k}, *{shape}), got {caps.shape}")
    for name, arr in (("capacities", caps), ("source_caps", src), ("sink_caps", snk)):
        if (arr < 0).any():
            raise ValueError(f"{name} must be >= 0, got minimum {arr.min()!r}")
    if caps.shape[0] == k:
        caps = np.concatenate([caps, np.empty_like(caps)])
        for kk in range(k):  # arc s+o_k -> s lives at s+o_k, direction K+k
            caps[k + kk] = _shift(caps[kk], off[kk])
    state = GridFlowState(shape, off)
    pshape, inner = state.pshape, state.inner
    state.rc.reshape(pshape + (2 * k,))[inner] = np.moveaxis(caps, 0, -1)
    state.tr.reshape(pshape)[inner] = src - snk
    inside = np.zeros(pshape, dtype=np.bool_)
    inside[inner] = True
    _drop_outer_arcs(state.rc, state.nbr, inside.ravel())
    flow = state.maxflow() + float(np.minimum(src, snk).sum())
    return flow, state.source_side().reshape(pshape)[inner].copy()


def _shift(a: np.ndarray, o: np.ndarray) -> np.ndarray:
    """out[s] = a[s - o] where inside, else 0."""
    out = np.zeros_like(a)
    src, dst = edge_slices(a.shape, o)
    out[dst] = a[src]
    return out


def cut_value(
    capacities, source_caps, sink_caps, source_set, *, connectivity: int = 1, offsets=None
) -> float:
    """Value of the s–t cut whose source side is ``source_set`` (same conventions as
    :func:`maxflow_grid`; slow, plain NumPy).

    Examples
    --------
    >>> import numpy as np
    >>> cut_value(np.array([[1.0, 0.0]]), [3.0, 0.0], [0.0, 2.0], [True, False], offsets=[[1]])
    1.0
    """
    src = np.asarray(source_caps, dtype=np.float64)
    snk = np.asarray(sink_caps, dtype=np.float64)
    s_in = np.asarray(source_set, dtype=bool)
    off = _resolve_offsets(src.ndim, offsets, connectivity)
    k = len(off)
    caps = np.asarray(capacities, dtype=np.float64)
    total = float(src[~s_in].sum() + snk[s_in].sum())
    for kk in range(k):
        o = off[kk]
        head_in = _shift(s_in.astype(np.int8), -o).astype(bool)  # S[s + o]
        valid = _shift(np.ones_like(s_in, dtype=np.int8), -o).astype(bool)
        fwd = caps[kk]
        total += float(fwd[valid & s_in & ~head_in].sum())  # s in S, s+o not
        if caps.shape[0] == 2 * k:
            bwd = _shift(caps[k + kk], -o)  # arc s+o -> s, stored at s+o, moved to s
        else:
            bwd = fwd
        total += float(bwd[valid & ~s_in & head_in].sum())
    return total
