"""Exact k-nearest-neighbour search in blocks, optionally screened by a certified bfloat16 pass.

**Blocks.** Scores are computed block by block, never as an N x N matrix: each block is one BLAS matrix product of up
to ``block`` queries x ``block`` gallery items, written into one buffer that every block reuses (instead of a fresh
allocation, and its page faults, per block). The exact search takes the largest block whose working set fits in
``BLOCK_BUDGET_BYTES`` (:func:`block_size`; 3,456 for 512-d float32: 48 MB of scores), so that the products are
large enough to run at the BLAS peak and the costs paid once per block (list merges, Python) are spread over many
scores. The screened search keeps ``SCREENING_BLOCK_SIZE`` = 2,048, measured fastest for bf16 blocks.
``chunk_size`` overrides both. A gallery larger than memory (a float32 ``numpy.memmap``) is read one block of rows
at a time, in a single sweep while the running lists of all queries fit in 64 MiB (760,000 queries at k = 11; the
outer loop then runs over the gallery's blocks), after one pass over it for its norms.

**Running lists.** Every query keeps a running list of its k best (score, gallery index) pairs under the strict order
"higher score first, then lower index". A block proposes, per query, either its own first k under that order (while
the list is filling up) or every score reaching the list's current k-th best (afterwards; a cheap comparison instead
of a top-k), and one top-k merges the proposals into the list: float32 scores and their indices are packed into int64
keys that sort in exactly that order (float64 scores take two stable sorts instead). The result is the exact global
first k of the scores as computed, whatever the blocking (the scores themselves can differ in the last bit between
block shapes: see "Ties" in :mod:`gsp_hub.metrics.retrieval`). A list that is still filling up takes the block's
entries reaching the k-th largest of its tile maxima (k tiles hold an entry that high, so its first k do). In
leave-one-out mode the score matrix is symmetric, so each block above the diagonal is computed once and feeds both
its rows and (transposed) its columns, halving the matrix products; the diagonal blocks come first, so that data
stored by class (most benchmarks' files) fill every list with its true neighbours early and later blocks propose few
entries.

**Precision and devices.** Float32 products run in IEEE float32 during the search whatever
``torch.set_float32_matmul_precision`` says elsewhere ('high' or 'medium' would let GPUs use TF32 and bf16-capable
CPUs bf16, and the ranking would no longer be the float32 one). Every step is a device-agnostic torch operation, so
the same code searches CUDA tensors on their GPU.

**bfloat16 screening** (cosine only; :func:`screening_available`). On CPUs with bfloat16 matrix units a bf16
``matmul`` is about 3x faster than float32, but not exact. The screened search runs the blocked search on bf16
scores with a longer list (``k + max(k, 32)`` entries), then re-scores the listed candidates in float32 and keeps
their exact first k. It is exact, not approximate: with E(s) a rigorous bound on |bf16 score - float32 score| (input
rounding of both vectors, float32 accumulation, bf16 rounding of the output; :class:`_Bf16Screen`), a query's list
is *certified* when its last approximate score s_L and its k-th s_k satisfy s_L + E(s_L) < s_k - E(s_k): then every
item left out scores strictly below the query's true k-th best in float32, so the exact first k is among the
candidates. Queries whose list is not certified (dense neighbourhoods) are searched again in float32, so the output
is always the exact float32 ranking, up to the last-bit rounding differences any two float32 kernels have. Where
bf16 products are slow (CPUs without bf16 dot-product instructions: AVX2, and AVX-512 without AVX512-BF16, where
oneDNN emulates them), the automatic choice is the float32 search; ``bf16_screening=False`` forces it anywhere. The
screening keeps a bf16 copy of the embeddings (2 bytes per value).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

__all__ = [
    "BLOCK_BUDGET_BYTES",
    "MIN_COSINE_NORM",
    "SCREENING_BLOCK_SIZE",
    "SCREENING_MIN_PAIRS",
    "block_size",
    "blocked_topk",
    "screening_available",
    "squared_norms",
]

logger = logging.getLogger(__name__)

BLOCK_BUDGET_BYTES = 64 * 2**20  # working set of one exact score block: scores, their tile maxima, normalised rows
SCREENING_BLOCK_SIZE = 2048  # side of the bf16-screened search's blocks (measured fastest; larger was slower)
SCREENING_MIN_PAIRS = 2**24  # automatic screening below this (e.g. 4096 x 4096) would not pay for its set-up
MIN_COSINE_NORM = 1e-12  # shortest row a cosine search accepts (the eps of F.normalize, which would clamp below it)
_TILE = 32  # items per tile when screening a block's rows for entries reaching the running list's floor
_TILE_TRANSPOSED = 16  # the same down its columns (both measured fastest on bf16 blocks of 2048)
_BLOCK_MULTIPLE = 64  # automatic block sides are whole tiles both ways
_SCREEN_EXTRA = 32  # the screened list holds k + max(k, _SCREEN_EXTRA) candidates
_RESCORE_ROWS = 64  # queries re-scored at once: (kept pairs, D) float32 gathered rows
_LIST_BUDGET_BYTES = 64 * 2**20  # every query's running list is kept (one sweep of the gallery) up to this size

ScoreBlock = Callable[[slice, slice], torch.Tensor]  # (query rows, gallery columns) -> padded scores, larger = nearer
ProposalFloor = Callable[[slice, torch.Tensor], torch.Tensor]  # (owners, their lists (owners, k)) -> (owners,)


def screening_available(device: torch.device) -> bool:
    """Whether bf16 matrix products on ``device`` are fast enough for screening to pay off: CUDA, or a CPU with
    bfloat16 dot-product instructions (AVX512-BF16 or AMX-BF16; oneDNN merely emulates bf16 on other AVX-512 CPUs)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and _cpu_has_bf16_dot()


@functools.cache
def _cpu_has_bf16_dot() -> bool:
    """True when /proc/cpuinfo lists avx512_bf16 or amx_bf16 (False where it cannot be read)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def block_size(
    num_queries: int, num_gallery: int, dim: int, dtype: torch.dtype, budget_bytes: int = BLOCK_BUDGET_BYTES
) -> int:
    """Side of the exact search's score blocks: the largest multiple of 64 whose working set fits in ``budget_bytes``,
    but no longer than the search's longer side (then one block spans it); at least 1.

    The working set of a side-B block of ``dtype`` (``itemsize`` bytes) for rows of width ``dim`` is
    ``itemsize * (B * B * (1 + 1/32 + 1/16) + 2 * B * dim)`` bytes: the scores, their maxima over the row tiles (32
    items) and the column tiles (16 items), and one block of normalised query and gallery rows.
    """
    # integer form of itemsize * (35/32 B^2 + 2 dim B) <= budget: 35 B^2 + 64 dim B <= 32 budget / itemsize
    quadratic, linear, constant = 35, 64 * dim, 32 * budget_bytes // dtype.itemsize
    side = (math.isqrt(linear**2 + 4 * quadratic * constant) - linear) // (2 * quadratic)
    if side >= _BLOCK_MULTIPLE:
        side -= side % _BLOCK_MULTIPLE
    return max(1, min(side, max(num_queries, num_gallery)))


def blocked_topk(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    *,
    distance: str,
    leave_one_out: bool,
    chunk_size: int | None,
    bf16_screening: bool | None,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(query rows, gallery indices (rows, k))`` per chunk of queries, nearest first, in query order.

    ``queries`` (Q, D) and ``gallery`` (G, D) are float32 or float64, Q, G, D >= 1; with ``leave_one_out`` they are
    the same tensor and each query skips itself. ``distance`` is ``'cosine'`` (every row at least
    ``MIN_COSINE_NORM`` long, which the callers check) or ``'euclidean'`` (larger = nearer: the negative squared
    distance). ``chunk_size`` is the side of the score blocks (None: :func:`block_size`, or
    ``SCREENING_BLOCK_SIZE`` when screening). ``bf16_screening`` uses the certified bf16 pass (True), the exact
    search alone (False), or decides (None: screening for cosine float32 searches of at least
    ``SCREENING_MIN_PAIRS`` pairs where :func:`screening_available`). The kernels chosen are logged at DEBUG level.
    """
    width = k + max(k, _SCREEN_EXTRA)
    screen, reason = _choose_screening(bf16_screening, queries, gallery, width, distance, leave_one_out)
    block = chunk_size or (SCREENING_BLOCK_SIZE if screen else block_size(
        len(queries), len(gallery), queries.shape[1], queries.dtype))
    kernel = "bf16 screening + float32 re-scoring" if screen else f"{str(queries.dtype).removeprefix('torch.')} search"
    schedule = "leave-one-out, symmetric blocks" if leave_one_out else "query/gallery"
    logger.debug("k-NN search: %s queries x %s items (%s), k=%d, %s on %s: %s in blocks of %d (%s)",
                 f"{len(queries):,}", f"{len(gallery):,}", schedule, k, distance, queries.device, kernel, block, reason)
    with _ieee_float32_matmuls():
        exclude = torch.arange(len(queries), device=queries.device) if leave_one_out else None
        if not screen:
            exact = _ExactScorer(queries, gallery, distance, block)
            for rows, _, indices in _running_topk(exact, len(queries), len(gallery), k, exclude, block,
                                                  queries.dtype, queries.device, symmetric=leave_one_out):
                yield rows, indices
            return
        bf16 = _Bf16Screen(queries, gallery, block, k)
        scales = _inverse_norms_of(queries, gallery)
        blocks, uncertified = [], []
        for rows, approximate, candidates in _running_topk(bf16, len(queries), len(gallery), width, exclude, block,
                                                           torch.float32, queries.device, symmetric=leave_one_out,
                                                           floor=bf16.proposal_floor):
            kept = approximate >= bf16.floor(rows, approximate[:, k - 1])[:, None]  # all that may be in the first k
            exact_scores = _rescore(queries, gallery, scales, rows, candidates, kept)
            blocks.append((rows, _best_first(exact_scores, candidates, k)[1]))
            uncertified.append(rows.start + (~bf16.certifies(rows, approximate)).nonzero().squeeze(1))
        # queries whose list is not certified are searched again in float32, all in one pass over the gallery
        uncertified = torch.cat(uncertified)
        logger.debug("bf16 screening: %s of %s queries not certified, searched again in float32",
                     f"{len(uncertified):,}", f"{len(queries):,}")
        if len(uncertified):
            all_indices = torch.cat([indices for _, indices in blocks])
            all_indices[uncertified] = _exact_topk_of_rows(queries, gallery, uncertified, k, distance,
                                                           leave_one_out, block)
            blocks = [(rows, all_indices[rows]) for rows, _ in blocks]
        yield from blocks


def _choose_screening(
    requested: bool | None,
    queries: torch.Tensor,
    gallery: torch.Tensor,
    width: int,
    distance: str,
    leave_one_out: bool,
) -> tuple[bool, str]:
    """``bf16_screening`` resolved to whether the search screens, and why (for the log)."""
    if requested is False:
        return False, "bf16_screening=False"
    if distance != "cosine" or queries.dtype != torch.float32:
        return False, "bf16 screening is for cosine float32 searches only"
    if width >= len(gallery) - int(leave_one_out):
        return False, f"no bf16 screening: its lists of {width} would hold the whole gallery"
    if requested:
        return True, "bf16_screening=True"
    if len(queries) * len(gallery) < SCREENING_MIN_PAIRS:
        return False, f"automatic: no bf16 screening below {SCREENING_MIN_PAIRS:,} pairs"
    if not screening_available(queries.device):
        return False, f"automatic: no fast bf16 dot products on this {queries.device.type.upper()}"
    return True, f"automatic: fast bf16 dot products on this {queries.device.type.upper()}"


@contextlib.contextmanager
def _ieee_float32_matmuls() -> Iterator[None]:
    """Float32 matrix products in IEEE float32 on every backend inside the block, the settings restored after."""
    backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
    saved = [backend.fp32_precision for backend in backends]
    try:
        for backend in backends:
            backend.fp32_precision = "ieee"
        yield
    finally:
        for backend, precision in zip(backends, saved):
            backend.fp32_precision = precision


# ---------------------------------------------------------------------------------------------------------------
# Scores


class _BlockBuffer:
    """One score buffer reused by every block. ``view(rows, columns)`` is a (rows', columns') block, rows rounded up
    to whole column tiles (``_TILE_TRANSPOSED``) and columns to whole row tiles (``_TILE``), with -inf in the
    padding; the caller writes the scores into its top-left (rows, columns) part."""

    def __init__(self, max_rows: int, max_columns: int, dtype: torch.dtype, device: torch.device) -> None:
        self.storage = torch.empty(_round_up(max_rows, _TILE_TRANSPOSED) * _round_up(max_columns, _TILE),
                                   dtype=dtype, device=device)

    def view(self, num_rows: int, num_columns: int) -> torch.Tensor:
        padded_rows, padded_columns = _round_up(num_rows, _TILE_TRANSPOSED), _round_up(num_columns, _TILE)
        block = self.storage[: padded_rows * padded_columns].view(padded_rows, padded_columns)
        block[:, num_columns:] = -torch.inf
        block[num_rows:] = -torch.inf
        return block


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class _ExactScorer:
    """Float32/64 score blocks of (query rows, gallery columns), larger = nearer, as :class:`_BlockBuffer` views.
    Cosine L2-normalises each block's rows on the fly (the same way in every block, into reused buffers) instead of
    keeping a normalised copy of the embeddings."""

    def __init__(self, queries: torch.Tensor, gallery: torch.Tensor, distance: str, block: int) -> None:
        self.queries, self.gallery = queries, gallery
        max_rows, max_columns = min(block, len(queries)), min(block, len(gallery))
        self.blocks = _BlockBuffer(max_rows, max_columns, queries.dtype, queries.device)
        if distance == "cosine":
            self.scales = _inverse_norms_of(queries, gallery)
            self.normalised = (queries.new_empty(max_rows, queries.shape[1]),
                               gallery.new_empty(max_columns, gallery.shape[1]))
        else:
            self.scales = None
            self.norms = (squared_norms(queries), squared_norms(gallery))

    def __call__(self, rows: slice, columns: slice) -> torch.Tensor:
        """The (rows, columns) block of scores, as a :class:`_BlockBuffer` view."""
        num_rows, num_columns = rows.stop - rows.start, columns.stop - columns.start
        block = self.blocks.view(num_rows, num_columns)
        scores = block[:num_rows, :num_columns]
        if self.scales is not None:
            query_scale, gallery_scale = self.scales
            query_buffer, gallery_buffer = self.normalised
            normalised_queries = torch.mul(self.queries[rows], query_scale[rows, None], out=query_buffer[:num_rows])
            if self.gallery is self.queries and rows == columns:  # a diagonal block: the same rows both ways
                normalised_gallery = normalised_queries
            else:
                normalised_gallery = torch.mul(self.gallery[columns], gallery_scale[columns, None],
                                               out=gallery_buffer[:num_columns])
            torch.mm(normalised_queries, normalised_gallery.T, out=scores)
        else:
            query_norms, gallery_norms = self.norms
            torch.addmm(gallery_norms[columns], self.queries[rows], self.gallery[columns].T, beta=-1, alpha=2,
                        out=scores)
            scores.sub_(query_norms[rows, None])
        return block


class _Bf16Screen:
    """bf16 copies of the L2-normalised embeddings, their bf16 block scores, and the bound that certifies them.

    For the float32 score s = q.g of normalised rows and its bf16 estimate s' = bf16(q'.g') (q', g' the bf16
    roundings, products accumulated in float32, the result rounded to bf16):
    |s' - s| <= E(s') = b_q + u |s'|, with b_q = ||q' - q|| max||g'|| + ||q|| max||g' - g||
    + gamma (2 ||q'|| max||g'|| + ||q|| max||g||), gamma = 2 D 2^-24 (float32 accumulation of D products, twice
    over for safety, in the bf16 product and in the float32 reference) and u = 2^-8 / (1 - 2^-8) (bf16 rounding of
    the output). Both s' - E(s') and s' + E(s') increase with s', which makes the floors below monotone.
    """

    def __init__(self, queries: torch.Tensor, gallery: torch.Tensor, block: int, k: int) -> None:
        self.k = k
        self.queries, query_error, query_norm, query_bf16_norm = self._round(queries, block)
        if gallery is queries:
            self.gallery, gallery_error, gallery_norm, gallery_bf16_norm = (
                self.queries, query_error, query_norm, query_bf16_norm)
        else:
            self.gallery, gallery_error, gallery_norm, gallery_bf16_norm = self._round(gallery, block)
        gamma = 2 * queries.shape[1] * 2.0**-24
        self.query_bound = (
            query_error * gallery_bf16_norm.max() + query_norm * gallery_error.max()
            + gamma * (2 * query_bf16_norm * gallery_bf16_norm.max() + query_norm * gallery_norm.max())
        ) * (1 + 1e-3)  # slack for the float32 evaluation of the norms themselves
        self.output_rounding = 2.0**-8 / (1 - 2.0**-8)
        self.blocks = _BlockBuffer(min(block, len(queries)), min(block, len(gallery)), torch.bfloat16, queries.device)

    @staticmethod
    def _round(embeddings: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """bf16 normalised rows (N, D), and per row: ||bf16 - float32||, ||float32||, ||bf16|| (N,) each."""
        rounded = torch.empty(embeddings.shape, dtype=torch.bfloat16, device=embeddings.device)
        error, norm, rounded_norm = (torch.empty(len(embeddings), device=embeddings.device) for _ in range(3))
        scales = _inverse_norms(embeddings)
        for start in range(0, len(embeddings), block):
            rows = slice(start, start + block)
            normalised = embeddings[rows] * scales[rows, None]
            rounded[rows] = normalised
            widened = rounded[rows].float()
            error[rows] = torch.linalg.vector_norm(widened - normalised, dim=1)
            norm[rows] = torch.linalg.vector_norm(normalised, dim=1)
            rounded_norm[rows] = torch.linalg.vector_norm(widened, dim=1)
        return rounded, error, norm, rounded_norm

    def __call__(self, rows: slice, columns: slice) -> torch.Tensor:
        """The (rows, columns) bf16 block product, as a :class:`_BlockBuffer` view (merged into float32 lists
        without a float32 copy of the block)."""
        num_rows, num_columns = rows.stop - rows.start, columns.stop - columns.start
        block = self.blocks.view(num_rows, num_columns)
        torch.mm(self.queries[rows], self.gallery[columns].T, out=block[:num_rows, :num_columns])
        return block

    def floor(self, owners: slice, kth: torch.Tensor) -> torch.Tensor:
        """(owners,) the approximate score an item needs to possibly beat, in float32, a query whose k-th best
        approximate score is ``kth``: x + E(x) >= kth - E(kth). Items below it are certainly out of the first k."""
        reach = kth - 2 * self.query_bound[owners] - self.output_rounding * kth.abs()
        return torch.where(reach >= 0, reach / (1 + self.output_rounding), reach / (1 - self.output_rounding))

    def proposal_floor(self, owners: slice, lists: torch.Tensor) -> torch.Tensor:
        """(owners,) what a block entry must reach to enter a running list (owners, L): its last entry, or the
        floor of its current k-th best if higher (the k-th best only rises, and the floor with it)."""
        return torch.maximum(lists[:, -1], self.floor(owners, lists[:, self.k - 1]))

    def certifies(self, rows: slice, approximate: torch.Tensor) -> torch.Tensor:
        """(rows,) bool: whether each query's candidate list (approximate scores (rows, L), best first) surely
        holds its exact first k: nothing left out of the list reaches the floor of its k-th best."""
        last = approximate[:, -1]
        return torch.isneginf(last) | (last < self.floor(rows, approximate[:, self.k - 1]))


def _rescore(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    scales: tuple[torch.Tensor, torch.Tensor],
    rows: slice,
    candidates: torch.Tensor,
    kept: torch.Tensor,
) -> torch.Tensor:
    """Float32 cosine scores (rows, L) of each query in ``rows`` against its candidate gallery items (rows, L),
    for the ``kept`` (rows, L) candidates; -inf elsewhere. Works on the kept (query, item) pairs only, a few queries
    at a time so that their rows stay in cache while the items' rows are gathered."""
    query_scale, gallery_scale = scales
    scores = torch.full(candidates.shape, -torch.inf, dtype=queries.dtype, device=queries.device)
    for start in range(0, len(candidates), _RESCORE_ROWS):
        part = slice(start, start + _RESCORE_ROWS)
        query_rows = slice(rows.start + start, min(rows.start + start + _RESCORE_ROWS, rows.stop))
        normalised_queries = queries[query_rows] * query_scale[query_rows, None]
        pair_row, pair_slot = kept[part].nonzero(as_tuple=True)
        items = candidates[part][pair_row, pair_slot]
        products = gallery.index_select(0, items) * normalised_queries.index_select(0, pair_row)  # (pairs, D)
        scores[part][pair_row, pair_slot] = products.sum(1) * gallery_scale[items]
    return scores


def _exact_topk_of_rows(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    query_indices: torch.Tensor,
    k: int,
    distance: str,
    leave_one_out: bool,
    block: int,
) -> torch.Tensor:
    """Exact float32 first k (len(query_indices), k) of the given queries, searched in the whole gallery."""
    subset = queries[query_indices]
    scorer = _ExactScorer(subset, gallery, distance, block)
    exclude = query_indices if leave_one_out else None
    results = [indices for _, _, indices in _running_topk(scorer, len(subset), len(gallery), k, exclude, block,
                                                          queries.dtype, queries.device, symmetric=False)]
    return torch.cat(results)


def squared_norms(embeddings: torch.Tensor) -> torch.Tensor:
    """(N,) sums of squares of (N, D) rows (exact for small integers), without an (N, D) temporary."""
    return torch.einsum("nd,nd->n", embeddings, embeddings)


def _inverse_norms_of(queries: torch.Tensor, gallery: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q,) and (G,) inverse norms of the query and gallery rows (computed once when they are the same tensor)."""
    query_scale = _inverse_norms(queries)
    return query_scale, query_scale if gallery is queries else _inverse_norms(gallery)


def _inverse_norms(embeddings: torch.Tensor) -> torch.Tensor:
    """(N,) 1 / ||row||: the true norm, rows being at least ``MIN_COSINE_NORM`` long (their squares sum to a
    normal float32, so the norm is accurate)."""
    return torch.linalg.vector_norm(embeddings, dim=1).reciprocal()


# ---------------------------------------------------------------------------------------------------------------
# Running top-k lists over score blocks


def _running_topk(
    score_block: ScoreBlock,
    num_queries: int,
    num_gallery: int,
    k: int,
    exclude: torch.Tensor | None,
    block: int,
    dtype: torch.dtype,
    device: torch.device,
    *,
    symmetric: bool,
    floor: ProposalFloor | None = None,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Yield ``(query rows, scores (rows, k), gallery indices (rows, k))`` per block of queries, best first.

    ``score_block(rows, columns)`` returns the block's scores padded with -inf to whole tiles (:class:`_BlockBuffer`),
    valid until its next call. ``floor(owners, lists)`` raises what a score must reach to enter the full lists of
    ``owners`` above their last entry (default: the last entry itself).

    ``exclude`` (Q,) names the gallery item each query must skip (itself, in leave-one-out mode). While the lists of
    all queries fit in ``_LIST_BUDGET_BYTES`` (or one score block), they are all kept, and the gallery is swept once,
    one block at a time (a memory-mapped gallery streams from disk once); ``symmetric`` (queries = gallery) then
    scores each block above the diagonal once for both its rows and its columns. Otherwise one block of queries at a
    time searches the whole gallery.
    """
    element_bytes = dtype.itemsize + 4  # score + int32 index
    keep_all = num_queries * k * element_bytes <= max(_LIST_BUDGET_BYTES, block**2 * dtype.itemsize)
    best_scores = torch.full((num_queries if keep_all else min(block, num_queries), k), -torch.inf,
                             dtype=dtype, device=device)
    # int32 gallery indices halve the lists' largest part; num_gallery sorts after every real index
    best_indices = torch.full(best_scores.shape, num_gallery, dtype=torch.int32, device=device)
    query_blocks = [slice(start, min(start + block, num_queries)) for start in range(0, num_queries, block)]
    gallery_blocks = [slice(start, min(start + block, num_gallery)) for start in range(0, num_gallery, block)]

    def merge(rows: slice, state_rows: slice, columns: slice, mirror: bool = False) -> None:
        scores = score_block(rows, columns)
        num_rows, num_columns = rows.stop - rows.start, columns.stop - columns.start
        if exclude is not None:
            _mask_excluded(scores[:num_rows, :num_columns], exclude[rows], columns)
        _merge_block(best_scores, best_indices, rows, state_rows, scores[:num_rows], columns.start, floor)
        if mirror:
            _merge_block(best_scores, best_indices, columns, columns, scores[:, :num_columns], rows.start, floor,
                         transposed=True)

    if not keep_all:
        for rows in query_blocks:
            state_rows = slice(0, rows.stop - rows.start)
            best_scores.fill_(-torch.inf)
            best_indices.fill_(num_gallery)
            for columns in gallery_blocks:
                merge(rows, state_rows, columns)
            yield rows, best_scores[state_rows].clone(), best_indices[state_rows].long()
        return
    if symmetric:  # diagonal blocks first: data stored by class finds most neighbours there, raising every list early
        for rows in query_blocks:
            merge(rows, rows, rows)
        for index, rows in enumerate(query_blocks):
            for columns in gallery_blocks[index + 1:]:
                merge(rows, rows, columns, mirror=True)
    else:
        for columns in gallery_blocks:
            for rows in query_blocks:
                merge(rows, rows, columns)
    for rows in query_blocks:
        yield rows, best_scores[rows].clone(), best_indices[rows].long()


def _mask_excluded(scores: torch.Tensor, excluded: torch.Tensor, columns: slice) -> None:
    """Set ``scores[r, excluded[r] - columns.start]`` to -inf where that item lies in ``columns``, in place."""
    inside = ((excluded >= columns.start) & (excluded < columns.stop)).nonzero().squeeze(1)
    scores[inside, excluded[inside] - columns.start] = -torch.inf


def _merge_block(
    best_scores: torch.Tensor,
    best_indices: torch.Tensor,
    owners: slice,
    lists: slice,
    scores: torch.Tensor,
    offset: int,
    floor: ProposalFloor | None,
    transposed: bool = False,
) -> None:
    """Merge a score block into the running top-k lists of ``owners`` (stored at rows ``lists``), in place.

    ``scores`` (rows, columns) holds the scores of the owners (its rows, or its columns when ``transposed``)
    against the items ``offset + j`` (its columns, or its rows), padded with -inf items to whole tiles. Padding
    items (indices past the gallery) never reach a full list's threshold and never stay in a list: every query has
    at least k finite scores.
    """
    k = best_scores.shape[1]
    owner_lists = best_scores[lists]
    if torch.isneginf(owner_lists[:, -1]).any():  # lists still filling up: a bound of each owner's k-th best here
        thresholds = None
    else:  # only scores reaching an owner's current k-th best (or a higher floor) can enter its list
        thresholds = owner_lists[:, -1] if floor is None else floor(owners, owner_lists)
    found = _entries_reaching(scores, thresholds, transposed, k)
    if found is None:  # too few tiles to bound the k-th best: every owner proposes its own first k
        target = torch.arange(lists.start, lists.stop, device=scores.device)
        candidate_scores, candidate_items = _first_k((scores.T if transposed else scores).contiguous(), k)
    else:
        target, candidate_scores, candidate_items = found
        target += lists.start
    merged_scores = torch.cat([best_scores.index_select(0, target), candidate_scores.to(best_scores.dtype)], 1)
    merged_indices = torch.cat([best_indices.index_select(0, target).long(), candidate_items + offset], 1)
    merged_scores, merged_indices = _best_first(merged_scores, merged_indices, k)
    best_scores.index_copy_(0, target, merged_scores)
    best_indices.index_copy_(0, target, merged_indices.to(best_indices.dtype))


def _best_first(scores: torch.Tensor, indices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k entries (rows, k) of every row of ``scores`` and ``indices`` (rows, L), best first under "higher
    score, then lower index" (each index at most once per row, except padding entries that share a -inf score).

    Float32: one top-k of int64 keys holding the score's bits, made monotone, above 2^32 - 1 - index. Float64 has
    no room for the index beside the score: its rows are sorted by index, then stably by score.
    """
    if scores.dtype == torch.float32:
        bits = (scores + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0, which it equals
        ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats' magnitude bits flipped: ints in float order
        keys = ordered.long() * 2**32 + (2**32 - 1 - indices)
        order = keys.topk(k, dim=1).indices
    else:
        indices, by_index = indices.sort(dim=1)
        scores = scores.gather(1, by_index)
        order = scores.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), indices.gather(1, order)


def _entries_reaching(
    scores: torch.Tensor, thresholds: torch.Tensor | None, transposed: bool, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Scores reaching their owner's threshold, packed per owner (owners = rows, or columns if ``transposed``).

    Screens tiles of ``_TILE`` items (``_TILE_TRANSPOSED`` down the columns; ``scores`` is padded to whole tiles) by
    their maximum first, so that only the few tiles holding a hit are read again. Returns the owners having any hit
    (M,), and their hit scores and items (M, most hits of an owner), padded with -inf scores.

    ``thresholds=None`` takes each owner's k-th largest tile maximum: k tiles hold an entry reaching it, so its k
    best entries all do. Returns None when that bound does not exist (fewer than k finite tile maxima).
    """
    # both tilings reduce along a middle dimension, which runs as element-wise maxima of contiguous vectors
    if transposed:  # tile t = rows t * _TILE_TRANSPOSED ... (t + 1) * _TILE_TRANSPOSED - 1 of each column
        tile_size = _TILE_TRANSPOSED
        tiled = scores.unflatten(0, (-1, tile_size))  # (tiles, tile_size, owners)
        tile_max, tiles = tiled.amax(1).T, tiled.permute(2, 0, 1)  # (owners, tiles), (owners, tiles, tile_size)
    else:  # tile t = columns t, t + tiles, t + 2 tiles, ... of each row
        tile_size = _TILE
        tiled = scores.unflatten(1, (tile_size, -1))  # (owners, tile_size, tiles)
        tile_max, tiles = tiled.amax(1), tiled.transpose(1, 2)
    if thresholds is None:
        if tile_max.shape[1] < k:
            return None
        thresholds = tile_max.topk(k, dim=1).values[:, -1]
        if torch.isneginf(thresholds).any():
            return None
    owner, tile = (tile_max >= thresholds[:, None]).nonzero(as_tuple=True)
    tile_scores = tiles[owner, tile]
    hit, offset = (tile_scores >= thresholds[owner, None]).nonzero(as_tuple=True)  # still sorted by owner
    owner, tile, values = owner[hit], tile[hit], tile_scores[hit, offset]
    item = tile * tile_size + offset if transposed else offset * tiles.shape[1] + tile
    owners_with_hits, counts = torch.unique_consecutive(owner, return_counts=True)
    packed_owner = torch.arange(len(counts), device=scores.device).repeat_interleave(counts)
    slot = torch.arange(len(owner), device=scores.device) - (counts.cumsum(0) - counts)[packed_owner]
    width = int(counts.max()) if len(counts) else 0
    packed_scores = scores.new_full((len(counts), width), -torch.inf)
    packed_items = torch.zeros_like(packed_scores, dtype=torch.int64)  # padding: -inf scores never enter a list
    packed_scores[packed_owner, slot] = values
    packed_items[packed_owner, slot] = item
    return owners_with_hits, packed_scores, packed_items


def _first_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The set (unordered) of the k best columns per row of ``scores`` (rows, columns): scores and column indices.

    Exact under "higher score, then lower column": ``topk`` may pick any of several equal scores at the cut, so
    rows with a tie there are sorted stably instead.
    """
    if k >= scores.shape[1]:
        return scores, torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    values, columns = scores.topk(k + 1, dim=1)
    tied = (values[:, k - 1] == values[:, k]).nonzero().squeeze(1)
    values, columns = values[:, :k], columns[:, :k]
    if len(tied):
        values[tied], columns[tied] = (part[:, :k] for part in scores[tied].sort(dim=1, descending=True, stable=True))
    return values, columns
