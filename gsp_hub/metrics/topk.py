"""Exact k-nearest-neighbour search in blocks, optionally screened by a certified bfloat16 pass.

Scores are computed block by block (``chunk_size`` queries x ``chunk_size`` gallery items), never as an N x N
matrix. Every query keeps a running list of its k best (score, gallery index) pairs under the strict order "higher
score first, then lower index". A block proposes, per query, either its own first k under that order (while the list
is filling up) or every score reaching the list's current k-th best (afterwards; a cheap comparison instead of a
top-k), and a stable sort merges the proposals into the list: the result is the exact global first k of the scores
as computed, whatever the blocking (the scores themselves can differ in the last bit between block shapes: see
"Ties" in :mod:`gsp_hub.metrics.retrieval`). A list that is still filling up takes the block's entries reaching the
k-th largest of its tile maxima (k tiles hold an entry that high, so its first k do). In leave-one-out mode the
score matrix is symmetric, so each block above the diagonal is computed once and feeds both its rows and
(transposed) its columns, halving the matrix products; the diagonal blocks come first, so that data stored by class
(most benchmarks' files) fill every list with its true neighbours early and later blocks propose few entries.

**bfloat16 screening** (cosine only; :func:`screening_available`). On CPUs with bfloat16 matrix units a bf16
``matmul`` is about 3x faster than float32, but not exact. The screened search runs the blocked search on bf16
scores with a longer list (``k + max(k, 32)`` entries), then re-scores the listed candidates in float32 and keeps
their exact first k. It is exact, not approximate: with E(s) a rigorous bound on |bf16 score - float32 score| (input
rounding of both vectors, float32 accumulation, bf16 rounding of the output; :class:`_Bf16Screen`), a query's list
is *certified* when its last approximate score s_L and its k-th s_k satisfy s_L + E(s_L) < s_k - E(s_k): then every
item left out scores strictly below the query's true k-th best in float32, so the exact first k is among the
candidates. Queries whose list is not certified (dense neighbourhoods) are searched again in float32, so the output
is always the exact float32 ranking, up to the last-bit rounding differences any two float32 kernels have.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_CHUNK_SIZE", "MIN_COSINE_NORM", "blocked_topk", "screening_available", "squared_norms"]

DEFAULT_CHUNK_SIZE = 2048
MIN_COSINE_NORM = 1e-12  # shortest row a cosine search accepts (the eps of F.normalize, which would clamp below it)
_TILE = 32  # items per tile when screening a block's rows for entries reaching the running list's floor
_TILE_TRANSPOSED = 16  # the same down its columns (both measured fastest on bf16 blocks of 2048)
_SCREEN_EXTRA = 32  # the screened list holds k + max(k, _SCREEN_EXTRA) candidates
_RESCORE_ROWS = 64  # queries re-scored at once: (kept pairs, D) float32 gathered rows
_LIST_BUDGET_BYTES = 64 * 2**20  # the symmetric schedule keeps every query's list; allowed up to this size

ScoreBlock = Callable[[slice, slice], torch.Tensor]  # (query rows, gallery columns) -> scores, larger = nearer
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


def blocked_topk(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    *,
    distance: str,
    leave_one_out: bool,
    chunk_size: int,
    screen: bool,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(query rows, gallery indices (rows, k))`` per chunk of queries, nearest first, in query order.

    ``queries`` (Q, D) and ``gallery`` (G, D) are float32 or float64, Q, G, D >= 1; with ``leave_one_out`` they are
    the same tensor and each query skips itself. ``distance`` is ``'cosine'`` (every row at least
    ``MIN_COSINE_NORM`` long, which the callers check) or ``'euclidean'`` (larger = nearer: the negative squared
    distance). ``screen`` uses the certified bf16 pass (cosine and float32 only).
    """
    exact = _ExactScorer(queries, gallery, distance)
    exclude = torch.arange(len(queries), device=queries.device) if leave_one_out else None
    width = k + max(k, _SCREEN_EXTRA)
    if not (screen and distance == "cosine" and queries.dtype == torch.float32
            and width < len(gallery) - int(leave_one_out)):
        for rows, _, indices in _running_topk(exact, len(queries), len(gallery), k, exclude, chunk_size,
                                              queries.dtype, queries.device, symmetric=leave_one_out):
            yield rows, indices
        return
    bf16 = _Bf16Screen(queries, gallery, chunk_size, k)
    blocks, uncertified = [], []
    for rows, approximate, candidates in _running_topk(bf16.scores, len(queries), len(gallery), width, exclude,
                                                       chunk_size, torch.float32, queries.device,
                                                       symmetric=leave_one_out, floor=bf16.proposal_floor):
        kept = approximate >= bf16.floor(rows, approximate[:, k - 1])[:, None]  # all that may be in the first k
        exact_scores = _rescore(queries, gallery, exact.scales, rows, candidates, kept)
        blocks.append((rows, _first_k_of_candidates(exact_scores, candidates, k)))
        uncertified.append(rows.start + (~bf16.certifies(rows, approximate)).nonzero().squeeze(1))
    # queries whose list is not certified are searched again in float32, all in one pass over the gallery
    uncertified = torch.cat(uncertified)
    if len(uncertified):
        all_indices = torch.cat([indices for _, indices in blocks])
        all_indices[uncertified] = _exact_topk_of_rows(queries, gallery, uncertified, k, distance, leave_one_out,
                                                       chunk_size)
        blocks = [(rows, all_indices[rows]) for rows, _ in blocks]
    yield from blocks


# ---------------------------------------------------------------------------------------------------------------
# Scores


class _ExactScorer:
    """Float32/64 scores of (query rows, gallery columns), larger = nearer. Cosine L2-normalises each block on the
    fly (the same way in every block) instead of keeping a normalised copy of the embeddings."""

    def __init__(self, queries: torch.Tensor, gallery: torch.Tensor, distance: str) -> None:
        self.queries, self.gallery = queries, gallery
        if distance == "cosine":
            self.scales = (_inverse_norms(queries), _inverse_norms(gallery))
        else:
            self.scales = None
            self.norms = (squared_norms(queries), squared_norms(gallery))

    def __call__(self, rows: slice, columns: slice) -> torch.Tensor:
        if self.scales is not None:
            query_scale, gallery_scale = self.scales
            return (self.queries[rows] * query_scale[rows, None]) @ (
                self.gallery[columns] * gallery_scale[columns, None]
            ).T
        query_norms, gallery_norms = self.norms
        scores = torch.addmm(gallery_norms[columns], self.queries[rows], self.gallery[columns].T, beta=-1, alpha=2)
        return scores.sub_(query_norms[rows, None])


class _Bf16Screen:
    """bf16 copies of the L2-normalised embeddings, their bf16 block scores, and the bound that certifies them.

    For the float32 score s = q.g of normalised rows and its bf16 estimate s' = bf16(q'.g') (q', g' the bf16
    roundings, products accumulated in float32, the result rounded to bf16):
    |s' - s| <= E(s') = b_q + u |s'|, with b_q = ||q' - q|| max||g'|| + ||q|| max||g' - g||
    + gamma (2 ||q'|| max||g'|| + ||q|| max||g||), gamma = 2 D 2^-24 (float32 accumulation of D products, twice
    over for safety, in the bf16 product and in the float32 reference) and u = 2^-8 / (1 - 2^-8) (bf16 rounding of
    the output). Both s' - E(s') and s' + E(s') increase with s', which makes the floors below monotone.
    """

    def __init__(self, queries: torch.Tensor, gallery: torch.Tensor, chunk_size: int, k: int) -> None:
        self.k = k
        self.queries, query_error, query_norm, query_bf16_norm = self._round(queries, chunk_size)
        if gallery is queries:
            self.gallery, gallery_error, gallery_norm, gallery_bf16_norm = (
                self.queries, query_error, query_norm, query_bf16_norm)
        else:
            self.gallery, gallery_error, gallery_norm, gallery_bf16_norm = self._round(gallery, chunk_size)
        gamma = 2 * queries.shape[1] * 2.0**-24
        self.query_bound = (
            query_error * gallery_bf16_norm.max() + query_norm * gallery_error.max()
            + gamma * (2 * query_bf16_norm * gallery_bf16_norm.max() + query_norm * gallery_norm.max())
        ) * (1 + 1e-3)  # slack for the float32 evaluation of the norms themselves
        self.output_rounding = 2.0**-8 / (1 - 2.0**-8)

    @staticmethod
    def _round(
        embeddings: torch.Tensor, chunk_size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """bf16 normalised rows (N, D), and per row: ||bf16 - float32||, ||float32||, ||bf16|| (N,) each."""
        rounded = torch.empty(embeddings.shape, dtype=torch.bfloat16, device=embeddings.device)
        error, norm, rounded_norm = (torch.empty(len(embeddings), device=embeddings.device) for _ in range(3))
        scales = _inverse_norms(embeddings)
        for start in range(0, len(embeddings), chunk_size):
            rows = slice(start, start + chunk_size)
            normalised = embeddings[rows] * scales[rows, None]
            rounded[rows] = normalised
            widened = rounded[rows].float()
            error[rows] = torch.linalg.vector_norm(widened - normalised, dim=1)
            norm[rows] = torch.linalg.vector_norm(normalised, dim=1)
            rounded_norm[rows] = torch.linalg.vector_norm(widened, dim=1)
        return rounded, error, norm, rounded_norm

    def scores(self, rows: slice, columns: slice) -> torch.Tensor:
        """(rows, columns) bf16 block product (merged into float32 lists without a float32 copy of the block)."""
        return self.queries[rows] @ self.gallery[columns].T

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


def _first_k_of_candidates(scores: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """The first k candidates (rows, k) of every row under "higher score, then lower gallery index"."""
    candidates, order = candidates.sort(dim=1)
    _, best = scores.gather(1, order).sort(dim=1, descending=True, stable=True)
    return candidates.gather(1, best[:, :k])


def _exact_topk_of_rows(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    query_indices: torch.Tensor,
    k: int,
    distance: str,
    leave_one_out: bool,
    chunk_size: int,
) -> torch.Tensor:
    """Exact float32 first k (len(query_indices), k) of the given queries, searched in the whole gallery."""
    subset = queries[query_indices]
    scorer = _ExactScorer(subset, gallery, distance)
    exclude = query_indices if leave_one_out else None
    results = [indices for _, _, indices in _running_topk(scorer, len(subset), len(gallery), k, exclude,
                                                          chunk_size, queries.dtype, queries.device,
                                                          symmetric=False)]
    return torch.cat(results)


def squared_norms(embeddings: torch.Tensor) -> torch.Tensor:
    """(N,) sums of squares of (N, D) rows (exact for small integers), without an (N, D) temporary."""
    return torch.einsum("nd,nd->n", embeddings, embeddings)


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
    chunk_size: int,
    dtype: torch.dtype,
    device: torch.device,
    *,
    symmetric: bool,
    floor: ProposalFloor | None = None,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Yield ``(query rows, scores (rows, k), gallery indices (rows, k))`` per chunk of queries, best first.

    ``floor(owners, lists)`` raises what a score must reach to enter the full lists of ``owners`` above their last
    entry (default: the last entry itself).

    ``exclude`` (Q,) names the gallery item each query must skip (itself, in leave-one-out mode). ``symmetric``
    (queries = gallery) scores each block above the diagonal once for both its rows and its columns; it keeps the
    lists of all queries at once, so it is used only while they fit in ``_LIST_BUDGET_BYTES`` or one score block.
    """
    element_bytes = torch.finfo(dtype).bits // 8 + 4  # score + int32 index
    symmetric = symmetric and num_queries * k * element_bytes <= max(
        _LIST_BUDGET_BYTES, chunk_size**2 * torch.finfo(dtype).bits // 8)
    best_scores = torch.full((num_queries if symmetric else min(chunk_size, num_queries), k), -torch.inf,
                             dtype=dtype, device=device)
    # int32 gallery indices halve the lists' largest part; num_gallery sorts after every real index
    best_indices = torch.full(best_scores.shape, num_gallery, dtype=torch.int32, device=device)
    gallery_starts = range(0, num_gallery, chunk_size)
    query_blocks = [slice(start, min(start + chunk_size, num_queries)) for start in range(0, num_queries, chunk_size)]

    def merge(rows: slice, state_rows: slice, columns: slice, mirror: bool = False) -> None:
        scores = score_block(rows, columns)
        if exclude is not None:
            _mask_excluded(scores, exclude[rows], columns)
        _merge_block(best_scores, best_indices, rows, state_rows, scores, columns.start, floor)
        if mirror:
            _merge_block(best_scores, best_indices, columns, columns, scores, rows.start, floor, transposed=True)

    if symmetric:  # diagonal blocks first: data stored by class finds most neighbours there, raising every list early
        for rows in query_blocks:
            merge(rows, rows, rows)
    for block, rows in enumerate(query_blocks):
        state_rows = rows if symmetric else slice(0, rows.stop - rows.start)
        if not symmetric:
            best_scores.fill_(-torch.inf)
            best_indices.fill_(num_gallery)
        for gallery_start in gallery_starts[block + 1:] if symmetric else gallery_starts:
            merge(rows, state_rows, slice(gallery_start, min(gallery_start + chunk_size, num_gallery)), symmetric)
        yield rows, best_scores[state_rows].clone(), best_indices[state_rows].long()


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
    against the items ``offset + j`` (its columns, or its rows).
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
        candidate_scores, candidate_items = _first_k((scores.T if transposed else scores).contiguous(), k,
                                                     exact_ties=floor is None)
    else:
        target, candidate_scores, candidate_items = found
        target += lists.start
    merged_scores = torch.cat([best_scores.index_select(0, target), candidate_scores], 1)
    merged_indices = torch.cat([best_indices.index_select(0, target), candidate_items + offset], 1)
    if floor is None:  # exact lists: lower index first among equal scores, kept by the stable sort below
        merged_indices, order = merged_indices.sort(dim=1)
        merged_scores = merged_scores.gather(1, order)
        merged_scores, order = merged_scores.sort(dim=1, descending=True, stable=True)
        merged_scores = merged_scores[:, :k]
    else:  # screening lists: any order among equal scores will do
        merged_scores, order = merged_scores.topk(k, dim=1)
    best_scores.index_copy_(0, target, merged_scores.contiguous())
    best_indices.index_copy_(0, target, merged_indices.gather(1, order[:, :k]).to(best_indices.dtype))


def _entries_reaching(
    scores: torch.Tensor, thresholds: torch.Tensor | None, transposed: bool, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Scores reaching their owner's threshold, packed per owner (owners = rows, or columns if ``transposed``).

    Screens tiles of ``_TILE`` items (``_TILE_TRANSPOSED`` down the columns) by their maximum first, so that only
    the few tiles holding a hit are read again. Returns the owners having any hit (M,), and their hit scores and
    items (M, most hits of an owner), padded with -inf scores.

    ``thresholds=None`` takes each owner's k-th largest tile maximum: k tiles hold an entry reaching it, so its k
    best entries all do. Returns None when that bound does not exist (fewer than k finite tile maxima).
    """
    item_dim = 0 if transposed else 1
    tile_size = _TILE_TRANSPOSED if transposed else _TILE
    if scores.shape[item_dim] % tile_size:
        padding = [0, 0, 0, 0]
        padding[2 * (1 - item_dim) + 1] = tile_size - scores.shape[item_dim] % tile_size
        scores = F.pad(scores, padding, value=-torch.inf)
    # both tilings reduce along a middle dimension, which runs as element-wise maxima of contiguous vectors
    if transposed:  # tile t = rows t * tile_size ... (t + 1) * tile_size - 1 of each column
        tiled = scores.unflatten(0, (-1, tile_size))  # (tiles, tile_size, owners)
        tile_max, tiles = tiled.amax(1).T, tiled.permute(2, 0, 1)  # (owners, tiles), (owners, tiles, tile_size)
    else:  # tile t = columns t, t + tiles, t + 2 tiles, ... of each row
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


def _first_k(scores: torch.Tensor, k: int, exact_ties: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The set (unordered) of the k best columns per row of ``scores`` (rows, columns): scores and column indices.

    Exact under "higher score, then lower column": ``topk`` may pick any of several equal scores at the cut, so
    rows with a tie there are sorted stably instead (unless ``exact_ties`` is False: any k best will do).
    """
    if k >= scores.shape[1]:
        return scores, torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    if not exact_ties:
        return scores.topk(k, dim=1, sorted=False)
    values, columns = scores.topk(k + 1, dim=1)
    tied = (values[:, k - 1] == values[:, k]).nonzero().squeeze(1)
    values, columns = values[:, :k], columns[:, :k]
    if len(tied):
        values[tied], columns[tied] = (part[:, :k] for part in scores[tied].sort(dim=1, descending=True, stable=True))
    return values, columns

