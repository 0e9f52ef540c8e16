"""The rounds of the chunked solve (:mod:`napari_tv.chunked`): halos, block tasks, the state
between rounds, the global gap from per-block sums.

A round is one dask computation: every block, extended by ``depth = K + 1`` voxels from its
neighbours, runs ``n <= K`` primal-dual iterations in its own task and keeps its own voxels.
The values at distance ``>= n`` from an artificial edge are then the whole-volume iterate's
(one iteration reads only neighbours at distance 1), so the block's voxels and one more
layer are exact: enough for the same task to add up the block's share of the duality gap
when the round ends on a gap evaluation (L2; for L1 and Poisson it returns the maxima of
``beta div p`` that fix the dual scale, and a second pass sums the gap terms).

The data ``v`` never changes: its extended blocks are made once (persisted, or written as
files) and every round reads them as they are.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import operator
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DaskRounds", "Problem", "State", "global_gap", "run_round", "state_mode", "temp_dir"]

#: ``state="auto"`` keeps the state in memory when it takes at most this share of the
#: available memory
MEMORY_SHARE = 0.5


def compute(*args, scheduler=None):
    """``dask.compute`` on ``scheduler`` (None: dask's current one)."""
    import dask

    kw = {} if scheduler is None else {"scheduler": scheduler}
    return dask.compute(*args, **kw)


def persist(*args, scheduler=None):
    """``dask.persist`` on ``scheduler``, waiting for the results (a ``dask.distributed``
    persist returns at once: what it was computed from could be released too early)."""
    import dask

    kw = {} if scheduler is None else {"scheduler": scheduler}
    out = dask.persist(*args, **kw)
    try:
        from distributed import futures_of, wait
    except ImportError:  # pragma: no cover - distributed is a dependency
        return out
    futures = futures_of(out)
    if futures:
        wait(futures)
    return out


@dataclass(frozen=True)
class Problem:
    """Everything a block task needs (small: it goes into every task)."""

    ndim: int
    beta: float
    code: int
    isotropic: bool
    periodic: bool
    ih: tuple
    gamma: float
    numblocks: tuple
    chunks: tuple
    fast: bool
    dtype: np.dtype
    #: the threads of the local dask pool (threads scheduler; ``_concurrent_tasks``)
    local_tasks: int = 1
    #: a ``dask.distributed`` cluster's worker threads per host, ``((host, n), ...)``
    host_tasks: tuple = ()


# --------------------------------------------------------------------------------------------
# geometry


def depths(numblocks, depth: int, periodic: bool) -> tuple:
    """The halo per axis: none along a Neumann axis in one chunk (nothing to exchange)."""
    return tuple(0 if (n == 1 and not periodic) else depth for n in numblocks)


def owned(location, numblocks, ext_shape, depth, periodic):
    """``(lo, hi)`` of a block's own voxels inside its extension, per axis."""
    lo, hi = [], []
    for i, n, ext, d in zip(location, numblocks, ext_shape, depth, strict=True):
        lo.append(d if (periodic or i > 0) else 0)
        hi.append(ext - (d if (periodic or i < n - 1) else 0))
    return lo, hi


def _padded_box(lo, hi, ndim):
    pad = 3 - ndim
    return [0] * pad + list(lo), [1] * pad + list(hi)


def _assemble(pieces, nd):
    """The extended block from its neighbours' pieces (nested lists ``nd`` deep): always a
    new C-contiguous array, which the block's task may overwrite."""
    return np.block(pieces) if nd else np.array(pieces)


def _load_piece(path: str, index: tuple) -> np.ndarray:
    """``index`` of a block stored as ``.npy`` (memory-mapped: only that region is read)."""
    return np.array(np.load(path, mmap_mode="r")[index])


def overlap(x, depth: int, periodic: bool, lead: int, files: BlockFiles | None = None):
    """``x`` with every block extended by ``depth`` voxels from its neighbours along the
    last ``x.ndim - lead`` axes (wrapping around for ``periodic``; nothing beyond a Neumann
    end, nor along a Neumann axis in one chunk).  One task per block, which reads the
    ``3**nd`` neighbours it needs (``dask.array.overlap`` builds ~15x more tasks for a
    periodic boundary).  Chunks must be at least ``depth`` long.  With ``files`` (the blocks
    of ``x`` on disk), each piece is read from its file directly."""
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    nd = x.ndim - lead
    nb = x.numblocks[lead:]
    dep = depths(nb, depth, periodic)
    name = f"napari-tv-halo-{depth}-" + x.name

    def piece(idx, offsets):
        key = [x.name] + [0] * lead
        index = [slice(None)] * lead
        for a, (i, o) in enumerate(zip(idx, offsets, strict=True)):
            key.append((i + o) % nb[a] if periodic else i + o)
            index.append(slice(None) if o == 0 else (slice(-dep[a], None) if o < 0
                                                     else slice(0, dep[a])))  # fmt: skip
        if files is not None:
            return (_load_piece, files.path(key[1 + lead :]), tuple(index))
        return (operator.getitem, tuple(key), tuple(index))

    def present(idx, a, o):
        return o == 0 or (dep[a] > 0 and (periodic or 0 <= idx[a] + o < nb[a]))

    def nest(idx, a, offsets):
        if a == nd:
            return piece(idx, offsets)
        return [nest(idx, a + 1, offsets + (o,)) for o in (-1, 0, 1) if present(idx, a, o)]

    dsk = {
        (name,) + (0,) * lead + idx: (_assemble, nest(idx, 0, ()), nd)
        for idx in np.ndindex(*nb)
    }
    chunks = list(x.chunks[:lead])
    for a in range(nd):
        cs = x.chunks[lead + a]
        chunks.append(tuple(
            c + sum(dep[a] for o in (-1, 1) if dep[a] > 0 and (periodic or 0 <= i + o < len(cs)))
            for i, c in enumerate(cs)
        ))  # fmt: skip
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[] if files else [x])
    return da.Array(graph, name, chunks=tuple(chunks), dtype=x.dtype, meta=x._meta)


# --------------------------------------------------------------------------------------------
# block tasks


def _concurrent_tasks(prob: Problem) -> int:
    """How many block tasks run side by side in this process: the threads of a
    ``dask.distributed`` worker, else the local pool's (at most one per block)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return max(1, min(prob.local_tasks, math.prod(prob.numblocks)))
    # every worker thread on this machine (several worker processes may share it)
    host = worker.address.rsplit("://", 1)[-1].rsplit(":", 1)[0]
    return max(1, dict(prob.host_tasks).get(host, int(worker.state.nthreads)))


@contextlib.contextmanager
def _task_threads(size: int, prob: Problem):
    """Numba threads for one block task: the cores shared among the tasks running side by
    side (two tasks each on two threads of a 2-core machine slowed a round by 10-40 %), or
    ``NAPARI_TV_TASK_THREADS``; small blocks on one (``threads_for``)."""
    import numba

    from napari_tv.solvers._stencils import threads_for

    wanted = os.environ.get("NAPARI_TV_TASK_THREADS")
    n = int(wanted) if wanted else max(1, (os.cpu_count() or 1) // _concurrent_tasks(prob))
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        with threads_for(size):
            yield
    finally:
        numba.set_num_threads(old)


def _gap_sums(u, v, p, lo, hi, prob: Problem, c: float | None) -> np.ndarray:
    """The gap sums (``c`` given) or the dual-slope maxima (``c`` None) over the owned box
    ``[lo, hi)`` of extended arrays whose box and next layer are exact."""
    from napari_tv.solvers._blockwise import box_gap_terms, box_max_slope
    from napari_tv.solvers._stencils import as_3d, as_4d

    nd = prob.ndim
    lo, hi = _padded_box(lo, hi, nd)
    ih = np.asarray(prob.ih)
    p4, v3 = as_4d(p), as_3d(v)
    if c is None:
        return box_max_slope(v3, p4, lo, hi, 3 - nd, ih, prob.beta, prob.code)
    return box_gap_terms(as_3d(u), v3, p4, lo, hi, ih, prob.isotropic, prob.beta, c, prob.code)


def iterate_block(s, v, lo, hi, prob: Problem, n, tau, sigma, gap):
    """``n`` primal-dual iterations in place on the extended block ``s = (u, ū, p)`` with
    its data ``v``; with ``gap``, the gap sums (L2) or slope maxima (L1, Poisson) of the
    owned box ``[lo, hi)``."""
    from napari_tv.solvers import _quick
    from napari_tv.solvers._stencils import CLIP, PROJECT, as_3d, as_4d
    from napari_tv.solvers.primal_dual import _fused_steps

    u, ubar, p = s[0], s[1], s[2:]
    w = np.empty_like(u)
    steps = _fused_steps if prob.fast else _quick.primal_dual_steps
    mode = PROJECT if prob.isotropic else CLIP
    with _task_threads(u.size, prob):
        steps(as_4d(p), as_3d(u), as_3d(ubar), as_3d(w), u.reshape(-1), ubar.reshape(-1),
              w.reshape(-1), v.reshape(-1), np.asarray(prob.ih), False, mode, prob.code,
              prob.beta, tau, sigma, prob.gamma, n)  # fmt: skip
        if gap:
            return _gap_sums(u, v, p, lo, hi, prob, 1.0 if prob.code == 0 else None)
    return None


def _step_task(s, v, loc, prob: Problem, n, tau, sigma, depth, gap, path):
    """``n`` primal-dual iterations on the extended block ``s = (u, ū, p)`` (``_assemble``'s
    own array: iterated in place) with its data ``v``.  Returns ``(own, sums)``: the block's
    own voxels of the new state (or None when written to ``path``), and with ``gap`` the
    block's gap sums (L2) or dual-slope maxima (L1, Poisson)."""
    dep = depths(prob.numblocks, depth, prob.periodic)
    lo, hi = owned(loc, prob.numblocks, v.shape, dep, prob.periodic)
    sums = iterate_block(s, np.ascontiguousarray(v), lo, hi, prob, n, tau, sigma, gap)
    own = np.ascontiguousarray(s[(slice(None),) + tuple(map(slice, lo, hi))])
    if path is None:
        return own, sums
    np.save(path, own)
    return None, sums


def _terms_task(s, v, loc, prob: Problem, c):
    """A block's gap sums from its extension by one voxel (L1, Poisson: after the slopes)."""
    dep = depths(prob.numblocks, 1, prob.periodic)
    lo, hi = owned(loc, prob.numblocks, v.shape, dep, prob.periodic)
    return _gap_sums(s[0], np.ascontiguousarray(v), s[2:], lo, hi, prob, c)


# --------------------------------------------------------------------------------------------
# state between rounds


_TEMP_ROOT: Path | None = None
_TEMP_LOCK = threading.Lock()


def temp_dir(prefix: str) -> Path:
    """A fresh directory under this process's temporary root (removed at exit)."""
    global _TEMP_ROOT
    with _TEMP_LOCK:
        if _TEMP_ROOT is None:
            _TEMP_ROOT = Path(tempfile.mkdtemp(prefix="napari-tv-"))
            atexit.register(shutil.rmtree, _TEMP_ROOT, True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_TEMP_ROOT))


class BlockFiles:
    """An array's blocks as ``.npy`` files in a directory, one per spatial block (a leading
    component axis stays whole), read back whole or, for halos, by memory-mapping only the
    regions needed."""

    def __init__(self, root: Path, lead: int):
        self.root, self.lead = root, lead
        root.mkdir(parents=True, exist_ok=True)
        self.name: str | None = None

    def path(self, loc) -> str:
        return str(self.root / ("b" + "_".join(str(int(i)) for i in loc) + ".npy"))

    def array(self, chunks, dtype, token: str):
        """The dask array of the stored blocks (``chunks``, ``dtype``)."""
        import dask.array as da
        from dask.highlevelgraph import HighLevelGraph

        name = f"napari-tv-blocks-{token}"
        lead = self.lead
        numblocks = tuple(len(c) for c in chunks)
        dsk = {
            (name,) + (0,) * lead + idx: (np.load, self.path(idx))
            for idx in np.ndindex(*numblocks[lead:])
        }
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=[])
        self.name = name
        return da.Array(graph, name, chunks=chunks, dtype=dtype,
                        meta=np.empty((0,) * len(chunks), dtype))  # fmt: skip

    def write(self, x, scheduler):
        """Store ``x`` (computing it); the dask array that loads the stored blocks."""
        from dask import delayed

        blocks = x.to_delayed().reshape(-1)
        locs = list(np.ndindex(*x.numblocks[self.lead :]))
        compute(*[delayed(np.save)(self.path(loc), b) for loc, b in zip(locs, blocks,
                                                                         strict=True)],
                scheduler=scheduler)  # fmt: skip
        return self.array(x.chunks, x.dtype, x.name)


class State:
    """Where the state lives between rounds: persisted in memory (dask ``persist``; on a
    ``dask.distributed`` cluster, the workers' memory), or on disk as one ``.npy`` file per
    block in two directories written in turn.  The data's extended blocks are kept the same
    way, made once."""

    def __init__(self, mode: str, scheduler, root=None):
        self.mode, self.scheduler = mode, scheduler
        self.dir: Path | None = None
        if mode == "disk":
            if root is None:
                self.dir = temp_dir("state-")
            else:  # a directory the caller removes (e.g. beside an output being written)
                Path(root).mkdir(parents=True, exist_ok=True)
                self.dir = Path(tempfile.mkdtemp(prefix="napari-tv-state-", dir=root))
            self.turns = [BlockFiles(self.dir / "a", 1), BlockFiles(self.dir / "b", 1)]
        self.turn = 0
        self._data: dict[int, tuple] = {}

    def files_of(self, x) -> BlockFiles | None:
        """The files behind ``x``, if it is the stored state."""
        if self.mode == "memory":
            return None
        return next((f for f in self.turns if f.name == x.name), None)

    def next_files(self) -> BlockFiles | None:
        if self.mode == "memory":
            return None
        files = self.turns[self.turn]
        self.turn = 1 - self.turn
        return files

    def keep(self, S):
        """The first state (computed and kept)."""
        if self.mode == "memory":
            return persist(S, scheduler=self.scheduler)[0]
        return self.next_files().write(S, self.scheduler)

    def data_blocks(self, V, depth: int, periodic: bool) -> list:
        """The data's blocks extended by ``depth`` (made once per depth), one per block in
        C order: persisted dask blocks, or loaders of files."""
        if depth not in self._data:
            ext = overlap(V, depth, periodic, 0)
            if self.mode == "memory":
                ext = persist(ext, scheduler=self.scheduler)[0]
            else:
                files = BlockFiles(self.dir / f"v{depth}", 0)
                ext = files.write(ext, self.scheduler)
            # the array itself is kept too: on a dask.distributed cluster its blocks live as
            # long as it does (the delayed blocks alone do not hold them)
            self._data[depth] = (ext, ext.to_delayed().reshape(-1).tolist())
        return self._data[depth][1]

    def close(self):
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def state_mode(state: str, n_words: int, voxels: int, itemsize: int) -> str:
    """``"memory"`` or ``"disk"`` for ``state`` (``"auto"``: memory when the state fits in
    ``MEMORY_SHARE`` of the available memory)."""
    from napari_tv._memory import available_bytes

    if state != "auto":
        return state
    available = available_bytes()
    need = n_words * voxels * itemsize
    return "memory" if available is None or need <= MEMORY_SHARE * available else "disk"


# --------------------------------------------------------------------------------------------
# a round, the gap


def run_round(S, V, store: State, prob: Problem, n: int, tau, sigma, K: int, gap: bool):
    """One round of ``n <= K`` iterations (halo ``K + 1``); returns the new state and, with
    ``gap``, the per-block sums (L2) or slope maxima (L1, Poisson)."""
    import dask.array as da
    from dask import delayed

    depth = K + 1
    s_ext = overlap(S, depth, prob.periodic, 1, store.files_of(S)).to_delayed().reshape(-1)
    v_ext = store.data_blocks(V, depth, prob.periodic)
    target = store.next_files()
    locs = list(np.ndindex(*prob.numblocks))
    tasks = [
        delayed(_step_task, pure=False)(s_ext[i], v_ext[i], loc, prob, n, tau, sigma, depth,
                                        gap, None if target is None else target.path(loc))
        for i, loc in enumerate(locs)
    ]  # fmt: skip
    if target is not None:
        sums = [delayed(operator.getitem)(t, 1) for t in tasks]
        out = compute(*sums, scheduler=store.scheduler)
        token = f"{tasks[0].key}-state"
        return target.array(S.chunks, S.dtype, token), (list(out) if gap else None)
    # run every task once (a task iterates its extension in place: it must not run twice),
    # then slice the kept results
    tasks = persist(*tasks, scheduler=store.scheduler)
    nd = prob.ndim
    blocks = {}
    for t, loc in zip(tasks, locs, strict=True):
        shape = (2 + nd,) + tuple(prob.chunks[a][loc[a]] for a in range(nd))
        blocks[loc] = da.from_delayed(delayed(operator.getitem)(t, 0), shape, dtype=S.dtype,
                                      meta=np.empty((0,) * (nd + 1), S.dtype))  # fmt: skip

    def nest(prefix):
        if len(prefix) == nd:
            return blocks[prefix]
        return [nest(prefix + (i,)) for i in range(prob.numblocks[len(prefix)])]

    # kept on its own (on a dask.distributed cluster the tasks' results are released with
    # ``tasks``; the state must not depend on them)
    S_new = persist(da.block([nest(())]), scheduler=store.scheduler)[0]
    if not gap:
        return S_new, None
    sums = [delayed(operator.getitem)(t, 1) for t in tasks]
    return S_new, list(compute(*sums, scheduler=store.scheduler))


def block_terms(S, V, store: State, prob: Problem):
    """``terms(c)``: every block's gap sums for the dual scale ``c`` (None: the slope
    maxima), from the state ``S`` extended by one voxel."""
    from dask import delayed

    def terms(c):
        s_ext = overlap(S, 1, prob.periodic, 1, store.files_of(S)).to_delayed().reshape(-1)
        v_ext = store.data_blocks(V, 1, prob.periodic)
        tasks = [delayed(_terms_task)(s_ext[i], v_ext[i], loc, prob, c)
                 for i, loc in enumerate(np.ndindex(*prob.numblocks))]  # fmt: skip
        return list(compute(*tasks, scheduler=store.scheduler))

    return terms


def global_gap(prob: Problem, floor: float, sums, terms):
    """The global :class:`~napari_tv.solvers._gap.Gap`: the sum of the blocks' sums
    (``sums``, from the round when it had them; for L1 and Poisson the slope maxima, which
    fix the dual scale before ``terms(c)`` sums the terms)."""
    from napari_tv.solvers._gap import Gap, scale_from_slopes

    c = 1.0
    if prob.code != 0 or sums is None:
        if prob.code != 0:
            slopes = np.asarray(terms(None) if sums is None else sums)
            c = scale_from_slopes(float(slopes[:, 0].max()), float(slopes[:, 1].max()),
                                  prob.code)  # fmt: skip
        sums = terms(c)
    fid, tv, fy, tg = np.sum(np.asarray(sums), axis=0)
    primal = float(fid + prob.beta * tv)
    gap_abs = float(max(fy + prob.beta * tg, 0.0))
    rel = 0.0 if gap_abs == 0.0 else gap_abs / max(primal - floor, 1e-300)
    return Gap(float(rel), gap_abs, primal, primal - gap_abs, c)


class DaskRounds:
    """The general rounds: the state a dask array (persisted, or files on disk), every
    block's extension rebuilt from its neighbours each round (:func:`run_round`)."""

    def __init__(self, S, V, store: State, prob: Problem, K: int):
        self.S, self.V, self.store, self.prob, self.K = S, V, store, prob, K

    def round(self, n: int, tau: float, sigma: float, gap: bool):
        self.S, sums = run_round(self.S, self.V, self.store, self.prob, n, tau, sigma, self.K,
                                 gap)  # fmt: skip
        return sums

    def terms(self, c):
        return block_terms(self.S, self.V, self.store, self.prob)(c)

    def u(self, chunks):
        return self.S[0]
