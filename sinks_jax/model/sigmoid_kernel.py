"""Sigmoid attention as fused Pallas kernels (Triton on GPU), forward and backward.

Sigmoid attention (model/variants.py, "sigmoid") weighs every visible key by
A_ij = sigmoid(s_ij + b_i), s_ij = scale q_i . k_j, b_i = -log n_i (n_i the keys query i sees),
with no row normaliser:

    O_i = sum_j A_ij v_j        L_i = sum_j A_ij   (the row's mass; the returned "lse" is log L_i)

so the forward is a plain blockwise sum: no running maximum and no rescaling. The backward,
with cotangents dO and dL (dL_i = dlse_i / L_i, by autodiff of the log outside the kernels):

    dV_j = sum_i A_ij dO_i
    dS_ij = A_ij (1 - A_ij) (dO_i . v_j + dL_i)
    dQ_i = scale sum_j dS_ij k_j        dK_j = scale sum_i dS_ij q_i

It needs neither the output nor a row statistic from the forward (a softmax backward needs
both): the residuals are q, k, v and the per-query bias.

Three kernels: the forward and dQ (grid: query blocks x batch x query heads; K/V read through
the query head's kv head, so GQA/MQA needs no broadcast copy), and dK/dV (grid: key blocks x
batch x kv heads, looping over the G query heads of the group, so no per-query-head dK/dV is
written and summed). Scores and sums are float32; the matmul inputs stay in the input dtype
(bf16: A and dS are rounded to bf16 for the A V, A^T dO, dS K and dS^T Q products, as flash
kernels do).

Masks. What query i sees is one contiguous range, first_i <= j <= i (first_i: the start of its
segment or of its window), plus key 0 with `global_first_key`; so key j is seen by the queries
j <= i <= last_j. Segment ids are taken as contiguous runs (what packing produces; the
library's `visible_count` and `sink_index` count them so). The wrapper derives first_i, last_j
and b_i from `visible_count`, the library's one definition of what a query sees (passed in by
`attention`), and pads T and the head dim to the kernel's tiles. Each program skips the key (or
query) blocks that none of its tile sees, runs the blocks that all of its tile sees without a
mask, and masks only the edge blocks (the diagonal, segment and window edges, key 0).

Sigmoid: 1 / (1 + 2^(-x log2 e)), the log2 e folded into the scale and bias. `approx=True`
(GPU only) uses the PTX `ex2.approx.ftz` and `rcp.approx.ftz` instructions (relative error
about 2^-22) instead of the libdevice exp2 and an IEEE division.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from sinks_jax.model import variants as variants_lib

LOG2E = math.log2(math.e)
MIN_BLOCK = 16  # the smallest tile Triton's matrix instructions take.


@dataclasses.dataclass(frozen=True)
class SigmoidBlocks:
    """Tiles and launch settings of the three kernels (powers of two, at least 16; clamped to
    the padded sequence length). `fwd_*`: forward, `dq_*`: dQ, `dkv_*`: dK/dV; `_q` the query
    tile, `_k` the key tile. `num_warps` None: 4 for head dims up to 64, else 8."""

    fwd_q: int = 128
    fwd_k: int = 64
    dq_q: int = 64
    dq_k: int = 64
    dkv_q: int = 64
    dkv_k: int = 64
    num_warps: int | None = None
    num_stages: int = 2
    approx: bool = False  # PTX approximate exp2 and reciprocal (ignored in interpret mode).

    def __post_init__(self):
        for f in ("fwd_q", "fwd_k", "dq_q", "dq_k", "dkv_q", "dkv_k"):
            b = getattr(self, f)
            if not (isinstance(b, int) and b >= MIN_BLOCK and b & (b - 1) == 0):
                raise ValueError(
                    f"SigmoidBlocks: {f}={b!r} must be a power of two of at least {MIN_BLOCK}."
                )

    def fitted(self, seq_len: int) -> "SigmoidBlocks":
        """Tiles no longer than the sequence padded to a power of two (at least 16)."""
        cap = max(MIN_BLOCK, pl.next_power_of_2(seq_len))
        tiles = {
            f: min(getattr(self, f), cap)
            for f in ("fwd_q", "fwd_k", "dq_q", "dq_k", "dkv_q", "dkv_k")
        }
        return dataclasses.replace(self, **tiles)

    @property
    def largest(self) -> int:
        return max(self.fwd_q, self.fwd_k, self.dq_q, self.dq_k, self.dkv_q, self.dkv_k)


def _cdiv(a, b: int):
    return lax.div(a + (b - 1), np.int32(b))


def _sigmoid_log2(x2, approx: bool):
    """sigmoid(x) from x2 = x log2(e)."""
    if not approx:
        return 1.0 / (1.0 + jnp.exp2(-x2))
    like = [jax.ShapeDtypeStruct(x2.shape, jnp.float32)]
    [e] = plgpu.elementwise_inline_asm(
        "ex2.approx.ftz.f32 $0, $1;", args=[-x2], constraints="=f,f", pack=1,
        result_shape_dtypes=like,
    )  # fmt: skip
    [r] = plgpu.elementwise_inline_asm(
        "rcp.approx.ftz.f32 $0, $1;", args=[1.0 + e], constraints="=f,f", pack=1,
        result_shape_dtypes=like,
    )  # fmt: skip
    return r


def _key_ranges(qi, first, block_q: int, block_k: int):
    """Key-block bounds of query block qi: [lo, mid) edge blocks (masked), [mid, diag) blocks
    every query of the tile sees (no mask), [diag, hi) the diagonal (masked)."""
    hi = _cdiv((qi + 1) * block_q, block_k)
    lo = lax.div(jnp.min(first), np.int32(block_k))
    mid = jnp.minimum(jnp.maximum(_cdiv(jnp.max(first), block_k), lo), hi)
    diag = jnp.minimum(jnp.maximum(lax.div(qi * block_q + 1, np.int32(block_k)), mid), hi)
    return lo, mid, diag, hi


def _query_ranges(kj, last, block_q: int, block_k: int):
    """Query-block bounds of key block kj, as `_key_ranges` seen from the keys."""
    lo = lax.div(kj * block_k, np.int32(block_q))
    hi = _cdiv(jnp.max(last) + 1, block_q)
    mid = jnp.minimum(jnp.maximum(_cdiv(kj * block_k + block_k - 1, block_q), lo), hi)
    end = jnp.minimum(jnp.maximum(lax.div(jnp.min(last) + 1, np.int32(block_q)), mid), hi)
    return lo, mid, end, hi


def _edge_start(lo, global_first_key: bool):
    """The first loop index over the edge blocks: one early where key 0 must be visited too
    (the loop then maps indices below `lo` to block 0)."""
    if not global_first_key:
        return lo
    return lo - jnp.minimum(lo, 1)


def _key_block(c, q, k_ref, v_ref, rows, *, scale, block_k, global_first_key, approx, masked):
    """(k, v, A) of loop index c over the key blocks of a query tile; `rows` = (lo, first
    key per query, query index, bias b log2 e). Indices below lo stand for block 0 (key 0)."""
    lo, first, q_idx, bias2 = rows
    kj = jnp.where(c < lo, 0, c) if masked and global_first_key else c
    start = pl.multiple_of(kj * block_k, block_k)
    k = k_ref[pl.ds(start, block_k), :]
    v = v_ref[pl.ds(start, block_k), :]
    p = _sigmoid_log2(plgpu.dot(q, k, trans_b=True) * (scale * LOG2E) + bias2[:, None], approx)
    if masked:
        k_idx = start + jnp.arange(block_k, dtype=jnp.int32)
        seen = (k_idx[None, :] >= first[:, None]) & (k_idx[None, :] <= q_idx[:, None])
        if global_first_key:
            seen = seen | (k_idx == 0)[None, :]
        p = jnp.where(seen, p, 0.0)
    return k, v, p


def _over_key_blocks(body, carry, qi, first, block_q, block_k, global_first_key):
    """`body(masked)` run over the key blocks of query tile qi: edge, inner, diagonal."""
    lo, mid, diag, hi = _key_ranges(qi, first, block_q, block_k)
    carry = lax.fori_loop(_edge_start(lo, global_first_key), mid, body(lo, True), carry)
    carry = lax.fori_loop(mid, diag, body(lo, False), carry)
    return lax.fori_loop(diag, hi, body(lo, True), carry)


def _fwd_kernel(q_ref, k_ref, v_ref, bias_ref, first_ref, o_ref, mass_ref, *, block_q, **kw):
    qi = pl.program_id(0)
    q, first = q_ref[...], first_ref[...]
    q_idx = qi * block_q + jnp.arange(block_q, dtype=jnp.int32)
    bias2 = bias_ref[...] * LOG2E

    def body(lo, masked):
        def step(c, carry):
            acc, mass = carry
            _, v, p = _key_block(c, q, k_ref, v_ref, (lo, first, q_idx, bias2), masked=masked, **kw)
            return acc + plgpu.dot(p.astype(v.dtype), v), mass + jnp.sum(p, axis=1)

        return step

    carry = (jnp.zeros(q.shape, jnp.float32), jnp.zeros((block_q,), jnp.float32))
    acc, mass = _over_key_blocks(body, carry, qi, first, block_q, kw["block_k"],
                                 kw["global_first_key"])  # fmt: skip
    o_ref[...] = acc.astype(o_ref.dtype)
    mass_ref[...] = mass


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, bias_ref, first_ref, dmass_ref, dq_ref, *, block_q,
               **kw):  # fmt: skip
    qi = pl.program_id(0)
    q, do, first, dmass = q_ref[...], do_ref[...], first_ref[...], dmass_ref[...]
    q_idx = qi * block_q + jnp.arange(block_q, dtype=jnp.int32)
    bias2 = bias_ref[...] * LOG2E

    def body(lo, masked):
        def step(c, dq):
            k, v, p = _key_block(c, q, k_ref, v_ref, (lo, first, q_idx, bias2), masked=masked, **kw)
            ds = p * (1.0 - p) * (plgpu.dot(do, v, trans_b=True) + dmass[:, None])
            return dq + plgpu.dot(ds.astype(k.dtype), k)

        return step

    dq = _over_key_blocks(body, jnp.zeros(q.shape, jnp.float32), qi, first, block_q,
                          kw["block_k"], kw["global_first_key"])  # fmt: skip
    dq_ref[...] = (dq * kw["scale"]).astype(dq_ref.dtype)


def _dkv_kernel(q_ref, k_ref, v_ref, do_ref, bias_ref, last_ref, dmass_ref, dk_ref, dv_ref, *,
                scale, block_q, block_k, groups, global_first_key, approx):  # fmt: skip
    kj = pl.program_id(0)
    k = k_ref[...]
    v = v_ref[...]
    last = last_ref[...]
    k_idx = kj * block_k + jnp.arange(block_k, dtype=jnp.int32)
    lo, mid, end, hi = _query_ranges(kj, last, block_q, block_k)

    def step(g, masked):
        def body(qi, carry):
            dk, dv = carry
            start = pl.multiple_of(qi * block_q, block_q)
            q = q_ref[pl.ds(start, block_q), g, :]
            do = do_ref[pl.ds(start, block_q), g, :]
            bias2 = bias_ref[pl.ds(start, block_q)] * LOG2E
            dmass = dmass_ref[g, pl.ds(start, block_q)]
            s_t = plgpu.dot(k, q, trans_b=True)  # [block_k, block_q]: keys by rows.
            p_t = _sigmoid_log2(s_t * (scale * LOG2E) + bias2[None, :], approx)
            if masked:
                q_idx = start + jnp.arange(block_q, dtype=jnp.int32)
                seen = (q_idx[None, :] >= k_idx[:, None]) & (q_idx[None, :] <= last[:, None])
                if global_first_key:
                    seen = seen | (k_idx == 0)[:, None]
                p_t = jnp.where(seen, p_t, 0.0)
            dv = dv + plgpu.dot(p_t.astype(do.dtype), do)
            dp_t = plgpu.dot(v, do, trans_b=True)
            ds_t = p_t * (1.0 - p_t) * (dp_t + dmass[None, :])
            dk = dk + plgpu.dot(ds_t.astype(q.dtype), q)
            return dk, dv

        return body

    def group(g, carry):
        carry = lax.fori_loop(lo, mid, step(g, True), carry)
        carry = lax.fori_loop(mid, end, step(g, False), carry)
        return lax.fori_loop(end, hi, step(g, True), carry)

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(0, groups, group, (zeros, zeros))
    dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _call(kernel, args, *, grid, in_specs, out_specs, out_shape, cfg, interpret, name):
    head_dim = args[0].shape[-1]
    warps = cfg.num_warps if cfg.num_warps is not None else (4 if head_dim <= 64 else 8)
    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        compiler_params=plgpu.CompilerParams(num_warps=warps, num_stages=cfg.num_stages),
        interpret=interpret, name=name,
    )(*args)  # fmt: skip


def _statics(scale, gfk, cfg: SigmoidBlocks, interpret: bool) -> dict:
    """The keyword arguments every kernel body takes."""
    return dict(scale=scale, global_first_key=gfk, approx=cfg.approx and not interpret)


def _query_tile_specs(q, k, bq):
    """Block specs over the grid (query tiles, batch, query heads): the query tile, the whole
    K or V of the head's kv head, a [bq] slice of a [B, T] row, of a [B, H, T] row."""
    Tp, D, G = q.shape[1], q.shape[3], q.shape[2] // k.shape[2]
    return (
        pl.BlockSpec((None, bq, None, D), lambda i, b, h: (b, i, h, 0)),
        pl.BlockSpec((None, Tp, None, D), lambda i, b, h: (b, 0, lax.div(h, np.int32(G)), 0)),
        pl.BlockSpec((None, bq), lambda i, b, h: (b, i)),
        pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i)),
    )


def _forward(q, k, v, bias, first, scale, gfk, cfg, interpret):
    B, Tp, H, _ = q.shape
    bq = cfg.fwd_q
    q_spec, kv_spec, row_spec, head_row_spec = _query_tile_specs(q, k, bq)
    kernel = functools.partial(_fwd_kernel, block_q=bq, block_k=cfg.fwd_k,
                               **_statics(scale, gfk, cfg, interpret))  # fmt: skip
    return _call(
        kernel, (q, k, v, bias, first), grid=(Tp // bq, B, H),
        in_specs=[q_spec, kv_spec, kv_spec, row_spec, row_spec],
        out_specs=[q_spec, head_row_spec],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                   jax.ShapeDtypeStruct((B, H, Tp), jnp.float32)],
        cfg=cfg, interpret=interpret, name="sigmoid_attention_fwd",
    )  # fmt: skip


def _backward_dq(q, k, v, do, bias, first, dmass, scale, gfk, cfg, interpret):
    B, Tp, H, _ = q.shape
    bq = cfg.dq_q
    q_spec, kv_spec, row_spec, head_row_spec = _query_tile_specs(q, k, bq)
    kernel = functools.partial(_dq_kernel, block_q=bq, block_k=cfg.dq_k,
                               **_statics(scale, gfk, cfg, interpret))  # fmt: skip
    return _call(
        kernel, (q, k, v, do, bias, first, dmass), grid=(Tp // bq, B, H),
        in_specs=[q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec, head_row_spec],
        out_specs=q_spec, out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        cfg=cfg, interpret=interpret, name="sigmoid_attention_dq",
    )  # fmt: skip


def _backward_dkv(q, k, v, do, bias, last, dmass, scale, gfk, cfg, interpret):
    B, Tp, H, D = q.shape
    K = k.shape[2]
    G = H // K
    bq, bk = cfg.dkv_q, cfg.dkv_k
    statics = _statics(scale, gfk, cfg, interpret)
    kernel = functools.partial(_dkv_kernel, block_q=bq, block_k=bk, groups=G, **statics)
    group_spec = pl.BlockSpec((None, Tp, G, D), lambda j, b, kh: (b, 0, kh, 0))
    kv_spec = pl.BlockSpec((None, bk, None, D), lambda j, b, kh: (b, j, kh, 0))
    return _call(
        kernel, (q, k, v, do, bias, last, dmass), grid=(Tp // bk, B, K),
        in_specs=[
            group_spec, kv_spec, kv_spec, group_spec,
            pl.BlockSpec((None, Tp), lambda j, b, kh: (b, 0)),
            pl.BlockSpec((None, bk), lambda j, b, kh: (b, j)),
            pl.BlockSpec((None, G, Tp), lambda j, b, kh: (b, kh, 0)),
        ],
        out_specs=[kv_spec, kv_spec],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        cfg=cfg, interpret=interpret, name="sigmoid_attention_dkv",
    )  # fmt: skip


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def _attend(q, k, v, bias, first, last, scale, gfk, cfg, interpret):
    return _forward(q, k, v, bias, first, scale, gfk, cfg, interpret)


def _attend_fwd(q, k, v, bias, first, last, scale, gfk, cfg, interpret):
    out = _forward(q, k, v, bias, first, scale, gfk, cfg, interpret)
    return out, (q, k, v, bias, first, last)


def _attend_bwd(scale, gfk, cfg, interpret, res, cotangents):
    q, k, v, bias, first, last = res
    dout, dmass = cotangents
    do = dout.astype(q.dtype)
    dmass = dmass.astype(jnp.float32)
    statics = (scale, gfk, cfg, interpret)
    dq = _backward_dq(q, k, v, do, bias, first, dmass, *statics)
    dk, dv = _backward_dkv(q, k, v, do, bias, last, dmass, *statics)
    return dq, dk, dv, None, None, None


_attend.defvjp(_attend_fwd, _attend_bwd)


def visibility(
    visible_count: Callable,
    seq_len: int,
    segment_ids_BxT: jax.Array | None,
    global_first_key: bool,
    window: int | None,
):
    """(bias b_i [B or 1, T] float32, first key first_i [B or 1, T], last query last_j
    [B or 1, T]) from `visible_count(seq_len, segment_ids, global_first_key, window)`.

    first_i = i - n_i + 1 and last_j = j + n'_j - 1, with n_i the keys query i sees in its
    own segment and window (key 0's global visibility aside) and n'_j the same count on the
    reversed row (the queries of j's segment and window at or after j); with
    `global_first_key` every query sees key 0, so last_0 = T - 1.
    """
    idx_1xT = jnp.arange(seq_len, dtype=jnp.int32)[None]
    bias = variants_lib.sigmoid_bias(
        visible_count(seq_len, segment_ids_BxT, global_first_key, window)
    )
    first = idx_1xT - visible_count(seq_len, segment_ids_BxT, False, window) + 1
    reversed_seg = None if segment_ids_BxT is None else segment_ids_BxT[:, ::-1]
    last = idx_1xT + visible_count(seq_len, reversed_seg, False, window)[:, ::-1] - 1
    if global_first_key:
        last = last.at[:, 0].set(seq_len - 1)
    return bias, first.astype(jnp.int32), last.astype(jnp.int32)


def sigmoid_attention(
    q_BxTxHxD: jax.Array,
    k_BxTxKxD: jax.Array,
    v_BxTxKxD: jax.Array,
    segment_ids_BxT: jax.Array | None = None,
    *,
    scale: float,
    visible_count: Callable,
    global_first_key: bool = False,
    window: int | None = None,
    softcap: float | None = None,
    blocks: SigmoidBlocks = SigmoidBlocks(),
    interpret: bool | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Causal sigmoid attention through the fused kernels. Returns (out [B,T,H,D] in q's
    dtype, lse [B,H,T] float32 = log of each row's total weight sum_j A_ij).

    `visible_count`: `sinks_jax.model.attention.visible_count` (what each query sees; the bias
    is -log of it). Segment ids are contiguous runs; `window` W: query i sees keys
    i - W < j <= i; `global_first_key`: key 0 is visible to every query. T is padded to the
    largest tile and the head dim to a power of two (at least 16). `interpret` None: Pallas
    interpret mode off GPU (the kernels' own code, slowly; the CPU tests).
    """
    if softcap is not None:
        raise ValueError(
            f"attention='pallas' with attention_variant='sigmoid' cannot soft-cap scores "
            f"(softcap={softcap}); use attention='blockwise'."
        )
    B, T, H, D = q_BxTxHxD.shape
    K = k_BxTxKxD.shape[2]
    if H % K:
        raise ValueError(f"sigmoid_attention: {H} query heads are not divisible by {K} kv heads.")
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    cfg = blocks.fitted(T)
    Tp = -(-T // cfg.largest) * cfg.largest
    Dp = max(MIN_BLOCK, pl.next_power_of_2(D))

    def pad(x):
        return jnp.pad(x, [(0, 0), (0, Tp - T), (0, 0), (0, Dp - D)])

    seg = None
    if segment_ids_BxT is not None:
        seg = segment_ids_BxT.astype(jnp.int32)
        # Padding queries form a segment of their own after the last one.
        seg = jnp.concatenate([seg, jnp.broadcast_to(seg[:, -1:] + 1, (B, Tp - T))], axis=1)
    window = None if window is None else int(window)
    bias, first, last = visibility(visible_count, Tp, seg, bool(global_first_key), window)
    bias, first, last = (jnp.broadcast_to(x, (B, Tp)) for x in (bias, first, last))
    o, mass = _attend(
        pad(q_BxTxHxD), pad(k_BxTxKxD), pad(v_BxTxKxD), bias, first, last,
        float(scale), bool(global_first_key), cfg, bool(interpret),
    )  # fmt: skip
    return o[:, :T, :, :D], jnp.log(mass[:, :, :T])
