"""Rounds with the state in place: the chunked solve's fast path on a local threaded (or
synchronous) dask scheduler with its state in memory (:mod:`napari_tv.chunked`).

The general path (:func:`napari_tv._rounds.run_round`) rebuilds every block's extension from
its neighbours each round (one copy of the whole state) and keeps its own part (another
copy): 40-60 % of a round's time on a volume that fits.  Here every block keeps its extended
arrays for the whole solve; a round first copies only the halo slabs from the neighbours'
own voxels (in the driver: a few % of the state), then dask's threads iterate every block in
place.  The iterates are the same numbers as the general path's (and the in-memory solver's).

Only for schedulers that share the arrays with the driver: worker processes and
``dask.distributed`` get copies, so there the general path runs.
"""

from __future__ import annotations

import itertools

import numpy as np

from napari_tv._rounds import Problem, _gap_sums, compute, depths, iterate_block, overlap

__all__ = ["InPlaceRounds", "shares_memory"]


def shares_memory(scheduler) -> bool:
    """Whether ``scheduler`` (None: dask's current one) runs tasks on threads of this
    process: the threaded or the synchronous scheduler."""
    import dask.local
    import dask.threaded
    from dask.base import get_scheduler

    get = get_scheduler(scheduler=scheduler)
    # None: nothing configured, a dask array's default (threads)
    return get is None or get in (dask.threaded.get, dask.local.get_sync)


def _terms(s, v, lo, hi, prob: Problem, c):
    return _gap_sums(s[0], v, s[2:], lo, hi, prob, c)


class InPlaceRounds:
    """The state of every block, extended by ``K + 1`` voxels, kept for the whole solve.

    ``x``: the data (a dask array in the blocks to solve on, computed here once).
    """

    def __init__(self, x, prob: Problem, K: int, scheduler):
        import dask

        self.prob, self.scheduler = prob, scheduler
        self.depth = d = K + 1
        nd, nb, periodic = prob.ndim, prob.numblocks, prob.periodic
        self.dep = dep = depths(nb, d, periodic)
        self.locs = list(np.ndindex(*nb))
        blocks = overlap(x, d, periodic, 0).to_delayed().reshape(-1)
        kw = {} if scheduler is None else {"scheduler": scheduler}
        self.v = [np.ascontiguousarray(b) for b in dask.compute(*blocks, **kw)]
        self.s, self.box = [], []
        for loc, v in zip(self.locs, self.v, strict=True):
            s = np.zeros((2 + nd,) + v.shape, dtype=v.dtype)
            s[0] = v
            s[1] = v
            self.s.append(s)
            lo = [dep[a] if (periodic or loc[a] > 0) else 0 for a in range(nd)]
            hi = [v.shape[a] - (dep[a] if (periodic or loc[a] < nb[a] - 1) else 0)
                  for a in range(nd)]  # fmt: skip
            self.box.append((lo, hi))
        self.index = {loc: i for i, loc in enumerate(self.locs)}
        self.halos = self._plan()

    def _plan(self) -> list:
        """``(dst block, dst region, src block, src region)`` for every halo slab: the
        neighbour's own voxels that a block's extension holds."""
        prob, dep, nb = self.prob, self.dep, self.prob.numblocks
        plan = []
        for i, loc in enumerate(self.locs):
            lo, hi = self.box[i]
            for offs in itertools.product((-1, 0, 1), repeat=prob.ndim):
                if not any(offs):
                    continue
                nloc, dst, ok = [], [], True
                for a, o in enumerate(offs):
                    j = loc[a] + o
                    if o and (dep[a] == 0 or not (prob.periodic or 0 <= j < nb[a])):
                        ok = False
                        break
                    nloc.append(j % nb[a])
                    dst.append((o, lo[a], hi[a]))
                if not ok:
                    continue
                k = self.index[tuple(nloc)]
                klo, khi = self.box[k]
                dsl, ssl = [], []
                for a, (o, blo, bhi) in enumerate(dst):
                    w = dep[a]
                    if o < 0:
                        dsl.append(slice(blo - w, blo))
                        ssl.append(slice(khi[a] - w, khi[a]))
                    elif o > 0:
                        dsl.append(slice(bhi, bhi + w))
                        ssl.append(slice(klo[a], klo[a] + w))
                    else:
                        dsl.append(slice(blo, bhi))
                        ssl.append(slice(klo[a], khi[a]))
                plan.append((i, (slice(None), *dsl), k, (slice(None), *ssl)))
        return plan

    def round(self, n: int, tau: float, sigma: float, gap: bool):
        """Exchange the halos, then ``n`` iterations on every block (dask's threads)."""
        from dask import delayed

        pieces = [(i, dst, self.s[k][src].copy()) for i, dst, k, src in self.halos]
        for i, dst, piece in pieces:
            self.s[i][dst] = piece
        tasks = [
            delayed(iterate_block, pure=False)(self.s[i], self.v[i], *self.box[i], self.prob,
                                               n, tau, sigma, gap)
            for i in range(len(self.locs))
        ]  # fmt: skip
        sums = compute(*tasks, scheduler=self.scheduler)
        return list(sums) if gap else None

    def terms(self, c):
        """Per-block gap sums for the dual scale ``c`` (None: the slope maxima)."""
        from dask import delayed

        tasks = [delayed(_terms, pure=False)(self.s[i], self.v[i], *self.box[i], self.prob, c)
                 for i in range(len(self.locs))]  # fmt: skip
        return list(compute(*tasks, scheduler=self.scheduler))

    def u(self, chunks):
        """The solution as a dask array (views of the blocks' own voxels, in memory)."""
        import dask.array as da

        nd = self.prob.ndim
        views = {}
        for i, loc in enumerate(self.locs):
            lo, hi = self.box[i]
            own = self.s[i][(0, *map(slice, lo, hi))]
            views[loc] = da.from_array(own, chunks=own.shape)

        def nest(prefix):
            if len(prefix) == nd:
                return views[prefix]
            return [nest(prefix + (j,)) for j in range(self.prob.numblocks[len(prefix)])]

        return da.block(nest(())).rechunk(chunks)
