"""netc's own GEMM for B with contiguous rows: C = alpha op(A) B + beta C in register tiles.

LLVM vectorizes netc's loops well enough where one operand streams (the direct CONV's taps), but
a GEMM needs its partial sums held in registers across the whole K loop, which no loop written in
Numba gets. So the tile is written in LLVM's own vector IR through Numba's `@intrinsic`: a block
of rows of C by a few vectors, summed over all of K in registers and written once: what a BLAS's
inner kernel does. The block follows the CPU's vector registers (`Geometry`, GEOMETRIES): on
AVX-512, 6 rows x 4 vectors of 64 bytes (24 of its 32 registers; 4 row loads and 6 broadcasts per
24 fused multiply-adds); on AVX2, 6 rows x 2 vectors of 32 bytes (12 of its 16, with 2 row loads
and a broadcast: the classic 6 x 16 of float32). Rates against OpenBLAS: bench/RESULTS.md.

B and C need contiguous rows (C = op(A) B, not B^T): that is the row that a vector loads. A is
read one element at a time (broadcast), so A or A^T are the same to the tile. A panel of B is
read in place where it stays in cache, over all of K or over K in blocks (k_block: AVX2's
narrower panels would otherwise leave L1 on long K); where B is big and its rows are long, the
panel is first copied into a contiguous block (packs(): rows a power of two apart fall on the
same few cache sets, and the tiles read them at down to a third of their rate).

`gemm_tiles` (C = op(A) B) and `gemm_tiles_nt` (C = A B^T, inner products) are the Numba-side
drivers; their last argument, a constant, picks the geometry (`host_vector_bytes()` for this
CPU). Another CPU's geometry runs too, correct and slower: LLVM splits wider vectors in two.
blas.py's gemm decides where they run instead of the BLAS, and calls them through
`entry`, one C-callable function compiled once for all kernels.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import carray, literally, types
from numba.core import cgutils
from numba.core.ccallback import CFunc
from numba.extending import intrinsic, overload

from ..cache import caching_in, njit, tolerant
from .linking import call, keep_reload_steps


class Geometry(NamedTuple):
    """The tiles for one vector width: C = op(A) B in rows x vectors accumulators, C = A B^T in
    nt_rows x nt_cols (rows of A by rows of B), each a vector of vector_bytes; C = op(A) B over
    K in blocks of k_block steps (0: all of K at once)."""
    vector_bytes: int
    rows: int
    vectors: int
    nt_rows: int
    nt_cols: int
    k_block: int = 0

    def __str__(self):
        blocks = f", K in blocks of {self.k_block}" if self.k_block else ""
        return (f"{self.rows} x {self.vectors} vectors of {self.vector_bytes} bytes{blocks}, "
                f"A B^T {self.nt_rows} x {self.nt_cols}")


# by vector bytes, to fill AVX-512's 32 registers or AVX2's 16 (accumulators, loads, a broadcast);
# 64's are the tiles as first written and measured
GEOMETRIES = {64: Geometry(64, 6, 4, 4, 6), 32: Geometry(32, 6, 2, 3, 4, 256)}
# gemm_tiles's packed panels (packs()): K in blocks of PACK_K (a panel of 256 bytes x 256: 64
# KiB, in L2), where B's rows lie a multiple of PACK_STRIDE bytes (the span of L1's sets) apart,
# B is bigger than PACK_MIN_BYTES and C has PACK_MIN_BLOCKS blocks of rows or more (fewer read
# the copy too few times: LeNet C2's 16 rows lost 10-25% packed)
PACK_K = 256
PACK_STRIDE = 4096
PACK_MIN_BYTES = 32 << 10
PACK_MIN_BLOCKS = 4
NT_CHUNK = 4096  # bytes of a row of K per pass: longer, and fewer sums across lanes per product
AVX512 = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")
AVX2 = ("avx2", "fma")
_I32, _I64 = ir.IntType(32), ir.IntType(64)


def vector_bytes(features) -> int | None:
    """The vector width the tiles fill on a CPU with these features (LLVM's names): 64 with
    AVX-512, 32 with AVX2 and FMA, None without (the BLAS then does all)."""
    for width, needs in ((64, AVX512), (32, AVX2)):
        if all(features.get(name, False) for name in needs):
            return width
    return None


@functools.cache
def host_vector_bytes() -> int | None:
    """vector_bytes() of the CPU Numba compiles for: this one's features as LLVM reports them
    (asked once per process: the question is slow), with NUMBA_CPU_FEATURES's `+name`/`-name`
    on top where it is set, as Numba applies them (`-avx512f` makes an AVX-512 host compile and
    run as an AVX2 one: README, Speed)."""
    return vector_bytes(target_features(llvm.get_host_cpu_features(), numba.config.CPU_FEATURES))


def target_features(host, overrides) -> dict:
    """`host` (LLVM's feature names -> bool) with the `+name` and `-name` of a comma-separated
    `overrides` string (NUMBA_CPU_FEATURES's form; None or empty: none) applied."""
    features = dict(host)
    for item in (overrides or "").split(","):
        item = item.strip()
        if len(item) > 1 and item[0] in "+-":
            features[item[1:]] = item[0] == "+"
    return features


class _Vectors:
    """The vector type of `lanes` `elem`s and the LLVM intrinsics both tiles use on it."""

    def __init__(self, builder, elem, lanes):
        self.builder, self.lanes = builder, lanes
        self.vt = vt = ir.VectorType(elem, lanes)
        self.vptr = vptr = vt.as_pointer()
        sfx = f"v{lanes}{'f64' if elem == ir.DoubleType() else 'f32'}"
        mt = ir.VectorType(ir.IntType(1), lanes)
        fn, module = cgutils.get_or_insert_function, builder.module
        self.fma = fn(module, ir.FunctionType(vt, [vt, vt, vt]), f"llvm.fma.{sfx}")
        self.mload = fn(module, ir.FunctionType(vt, [vptr, _I32, mt, vt]), f"llvm.masked.load.{sfx}.p0")
        self.mstore = fn(module, ir.FunctionType(ir.VoidType(), [vt, vptr, _I32, mt]),
                         f"llvm.masked.store.{sfx}.p0")
        self.zero = ir.Constant(vt, [0.0] * lanes)

    def mask(self, count):
        """Lanes below `count` (an i64 value)."""
        ids = ir.Constant(ir.VectorType(_I64, self.lanes), list(range(self.lanes)))
        return self.builder.icmp_unsigned("<", ids, _splat(self.builder, count, ir.VectorType(_I64, self.lanes)))

    def accumulators(self, rows, cols):
        """rows x cols vectors in the entry block, zeroed (LLVM keeps them in registers)."""
        accs = [[cgutils.alloca_once(self.builder, self.vt) for _ in range(cols)] for _ in range(rows)]
        for row in accs:
            for slot in row:
                self.builder.store(self.zero, slot)
        return accs


def _geometry(key):
    """The Geometry that a driver's constant argument names, or None (not a constant, or unknown)."""
    if isinstance(key, types.IntegerLiteral):
        return GEOMETRIES.get(key.literal_value)
    return None


def _lanes(context, dtype, geometry):
    elem = context.get_data_type(dtype)
    return elem, geometry.vector_bytes // context.get_abi_sizeof(elem)


def _pointers(context, builder, pairs):
    """Data pointers of arrays, each moved on by an element offset: pairs of (type, value, offset)."""
    return [builder.gep(context.make_array(t)(context, builder, v).data, [o]) for t, v, o in pairs]


def _emit_tile(builder, elem, lanes, pa, sar, sac, pb, ldb, pc, ldc, k, alpha, beta, rows, nv,
               width):
    """IR for one tile: rows x nv vectors of C; `width` (an i64 value, 1..lanes) masks the last
    vector's lanes where it is given (the right edge of C), else every lane is written."""
    vec = _Vectors(builder, elem, lanes)
    vt, vptr, fma, zero = vec.vt, vec.vptr, vec.fma, vec.zero
    if width is not None:
        mload, mstore, mask = vec.mload, vec.mstore, vec.mask(width)
    align = ir.Constant(_I32, 4)  # element alignment: vectors may start anywhere

    def vec_at(base, offset):
        return builder.bitcast(builder.gep(base, [offset]), vptr)

    def load(ptr, last):
        if last and width is not None:
            return builder.call(mload, [ptr, align, mask, zero])
        return builder.load(ptr, align=4)

    def store(value, ptr, last):
        if last and width is not None:
            builder.call(mstore, [value, ptr, align, mask])
        else:
            builder.store(value, ptr, align=4)

    accs = vec.accumulators(rows, nv)
    with cgutils.for_range(builder, k) as loop:
        brow = builder.gep(pb, [builder.mul(loop.index, ldb)])
        bs = [load(vec_at(brow, ir.Constant(_I64, v * lanes)), v == nv - 1) for v in range(nv)]
        acol = builder.gep(pa, [builder.mul(loop.index, sac)])
        for r in range(rows):
            s = builder.load(builder.gep(acol, [builder.mul(ir.Constant(_I64, r), sar)]))
            s = _splat(builder, s, vt)
            for v in range(nv):
                builder.store(builder.call(fma, [s, bs[v], builder.load(accs[r][v])]), accs[r][v])
    va, vb = _splat(builder, alpha, vt), _splat(builder, beta, vt)
    keep = _beta_nonzero(builder, beta)
    for r in range(rows):
        crow = builder.gep(pc, [builder.mul(ir.Constant(_I64, r), ldc)])
        for v in range(nv):
            ptr, last = vec_at(crow, ir.Constant(_I64, v * lanes)), v == nv - 1
            _write(builder, keep, builder.fmul(va, builder.load(accs[r][v])), vb,
                   lambda: load(ptr, last), lambda value: store(value, ptr, last))


def _beta_nonzero(builder, beta):
    return builder.fcmp_unordered("!=", beta, ir.Constant(beta.type, 0.0))


def _write(builder, keep, value, beta, load, store):
    """store(value + beta * load()) where `keep` (beta is not 0), else store(value): with beta
    0, C is not read (it may hold anything, NaN included). The lambdas are called while the IR
    is built, inside each branch."""
    with builder.if_else(keep) as (add, put):
        with add:
            store(builder.fadd(value, builder.fmul(beta, load())))
        with put:
            store(value)


def _splat(builder, scalar, vt):
    """A vector of vt's type with `scalar` in every lane."""
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined),
                                  ir.Constant(ir.VectorType(_I32, vt.count), [0] * vt.count))


def _float_arrays(*arrays):
    """Whether the tiles can take these argument types: arrays of one float type."""
    return (all(isinstance(t, types.Array) and isinstance(t.dtype, types.Float) for t in arrays)
            and len({t.dtype for t in arrays}) == 1)


@intrinsic
def _tile(typingctx, a, ao, sar, sac, b, bo, ldb, c, co, ldc, k, alpha, beta, rows, width, key):
    """C[co + r*ldc + j] = alpha sum_k A[ao + r*sar + k*sac] B[bo + k*ldb + j] + beta C[...] for
    r < rows (1..g.rows) and j < width (1..g.vectors*lanes), in the geometry g that the constant
    `key` names, lanes = its vector bytes of the arrays' type: a full tile, or as many vectors as
    cover width with the last one masked. Offsets and strides in elements; a, b, c are arrays of
    one float type, used only for their data pointers."""
    g = _geometry(key)
    if g is None or not _float_arrays(a, b, c):
        return None
    sig = types.void(a, types.intp, types.intp, types.intp, b, types.intp, types.intp, c,
                     types.intp, types.intp, types.intp, c.dtype, c.dtype, types.intp, types.intp, key)

    def codegen(context, builder, signature, args):
        a_, ao_, sar_, sac_, b_, bo_, ldb_, c_, co_, ldc_, k_, alpha_, beta_, rows_, width_, _ = args
        elem, lanes = _lanes(context, c.dtype, g)
        pa, pb, pc = _pointers(context, builder, ((a, a_, ao_), (b, b_, bo_), (c, c_, co_)))
        done = builder.append_basic_block("tile.done")
        # which body: a full-width tile, or 1..vectors with the last one masked, times the rows
        cases = [(g.vectors, False, r) for r in range(1, g.rows + 1)]
        cases += [(nv, True, r) for nv in range(1, g.vectors + 1) for r in range(1, g.rows + 1)]
        const = functools.partial(ir.Constant, _I64)
        full = builder.icmp_signed("==", width_, const(g.vectors * lanes))
        vectors = builder.sdiv(builder.add(width_, const(lanes - 1)), const(lanes))
        kind = builder.select(full, const(0), vectors)
        key_ = builder.add(builder.mul(kind, const(g.rows)), builder.sub(rows_, const(1)))
        last = builder.sub(width_, builder.mul(builder.sub(vectors, const(1)), const(lanes)))
        switch = builder.switch(key_, done)
        for i, (nv, masked, r) in enumerate(cases):
            block = builder.append_basic_block(f"tile.{i}")
            switch.add_case(const(i), block)
            with builder.goto_block(block):
                _emit_tile(builder, elem, lanes, pa, sar_, sac_, pb, ldb_, pc, ldc_, k_, alpha_,
                           beta_, r, nv, last if masked else None)
                builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()
    return sig, codegen


def _emit_nt(builder, elem, lanes, pa, lda, pb, ldb, pc, ldc, k, alpha, beta, rows, cols):
    """IR for one inner-product tile: C[r, c] (r < rows, c < cols) from rows of A and rows of B,
    a vector of K at a time into rows x cols accumulators (the last vector masked), each summed
    across its lanes at the end."""
    vec = _Vectors(builder, elem, lanes)
    vptr, fma, mload, zero = vec.vptr, vec.fma, vec.mload, vec.zero
    align = ir.Constant(_I32, 4)
    accs = vec.accumulators(rows, cols)
    rows_a = [builder.gep(pa, [builder.mul(ir.Constant(_I64, r), lda)]) for r in range(rows)]
    rows_b = [builder.gep(pb, [builder.mul(ir.Constant(_I64, j), ldb)]) for j in range(cols)]

    def step(offset, mask):
        def get(base):
            ptr = builder.bitcast(builder.gep(base, [offset]), vptr)
            return builder.load(ptr, align=4) if mask is None else builder.call(mload, [ptr, align, mask, zero])
        xs = [get(base) for base in rows_a]
        for j in range(cols):
            y = get(rows_b[j])
            for r in range(rows):
                builder.store(builder.call(fma, [xs[r], y, builder.load(accs[r][j])]), accs[r][j])

    full = builder.sdiv(k, ir.Constant(_I64, lanes))
    with cgutils.for_range(builder, full) as loop:
        step(builder.mul(loop.index, ir.Constant(_I64, lanes)), None)
    done = builder.mul(full, ir.Constant(_I64, lanes))
    rest = builder.sub(k, done)
    with builder.if_then(builder.icmp_signed(">", rest, ir.Constant(_I64, 0))):
        step(done, vec.mask(rest))
    keep = _beta_nonzero(builder, beta)
    for r in range(rows):
        crow = builder.gep(pc, [builder.mul(ir.Constant(_I64, r), ldc)])
        for j in range(cols):
            ptr = builder.gep(crow, [ir.Constant(_I64, j)])
            _write(builder, keep, builder.fmul(alpha, _sum_lanes(builder, builder.load(accs[r][j]))),
                   beta, lambda: builder.load(ptr), lambda value: builder.store(value, ptr))


def _sum_lanes(builder, v):
    """The sum of a vector's lanes, halving it: (0..n/2) + (n/2..n), and again."""
    n = v.type.count
    while n > 1:
        n //= 2
        undef = ir.Constant(v.type, ir.Undefined)
        lo = builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(_I32, n), list(range(n))))
        hi = builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(_I32, n), list(range(n, 2 * n))))
        v = builder.fadd(lo, hi)
    return builder.extract_element(v, ir.Constant(_I32, 0))


@intrinsic
def _tile_nt(typingctx, a, ao, lda, b, bo, ldb, c, co, ldc, k, alpha, beta, rows, cols, key):
    """C[co + r*ldc + j] = alpha sum_k A[ao + r*lda + k] B[bo + j*ldb + k] + beta C[...] for
    r < rows (1..g.nt_rows), j < cols (1..g.nt_cols) in the geometry g that the constant `key`
    names: C = A B^T, with K contiguous in both."""
    g = _geometry(key)
    if g is None or not _float_arrays(a, b, c):
        return None
    sig = types.void(a, types.intp, types.intp, b, types.intp, types.intp, c, types.intp,
                     types.intp, types.intp, c.dtype, c.dtype, types.intp, types.intp, key)

    def codegen(context, builder, signature, args):
        a_, ao_, lda_, b_, bo_, ldb_, c_, co_, ldc_, k_, alpha_, beta_, rows_, cols_, _ = args
        elem, lanes = _lanes(context, c.dtype, g)
        pa, pb, pc = _pointers(context, builder, ((a, a_, ao_), (b, b_, bo_), (c, c_, co_)))
        done = builder.append_basic_block("nt.done")
        const = functools.partial(ir.Constant, _I64)
        key_ = builder.add(builder.mul(builder.sub(rows_, const(1)), const(g.nt_cols)),
                           builder.sub(cols_, const(1)))
        switch = builder.switch(key_, done)
        for r in range(1, g.nt_rows + 1):
            for j in range(1, g.nt_cols + 1):
                block = builder.append_basic_block(f"nt.{r}.{j}")
                switch.add_case(const((r - 1) * g.nt_cols + j - 1), block)
                with builder.goto_block(block):
                    _emit_nt(builder, elem, lanes, pa, lda_, pb, ldb_, pc, ldc_, k_, alpha_, beta_, r, j)
                    builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def data_pointer(typingctx, arr):
    """An array's data pointer, typed as a pointer to its elements."""
    def codegen(context, builder, signature, args):
        return context.make_array(arr)(context, builder, args[0]).data
    return types.CPointer(arr.dtype)(arr), codegen


def _blocking(key):
    """(rows, vectors, nt_rows, nt_cols, vector_bytes) of GEOMETRIES[key], in Numba code."""
    g = GEOMETRIES[key]
    return g.rows, g.vectors, g.nt_rows, g.nt_cols, g.vector_bytes, g.k_block


@overload(_blocking)
def _blocking_overload(key):
    g = _geometry(key)
    if g is not None:
        numbers = _blocking(key.literal_value)
        return lambda key: numbers
    return None


@njit(nogil=True)
def gemm_tiles(ta, alpha, a, b, beta, c, key):
    """c = alpha op(a) b + beta c (c is not read where beta is 0), op(a) = a.T where ta is set;
    b's and c's rows contiguous, a's elements contiguous within a row. `key`: a constant, the
    GEOMETRIES entry to run (its vector bytes). A panel of b's columns at a time, down all of c's
    rows, K in blocks of the geometry's k_block (all of K where it is 0), or, where the panel is
    packed (packs()), in blocks of PACK_K from the packed copy."""
    literally(key)
    rows, vectors, _, _, vbytes, kb = _blocking(key)
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    lda, ldb, ldc = a.strides[0] // a.itemsize, b.strides[0] // b.itemsize, c.strides[0] // c.itemsize
    sar, sac = (1, lda) if ta else (lda, 1)
    panel = vectors * vbytes // c.itemsize
    pack = packs(m, k, ldb, panel, b.itemsize, rows)
    if pack:
        kb = PACK_K if kb == 0 else min(kb, PACK_K)
    kb = k if kb == 0 else kb
    # b and the packed copy as arrays of one type (so that one set of tile bodies reads either)
    flat = carray(data_pointer(b), (k - 1) * ldb + n if k > 0 else 0)
    buf = np.empty(kb * panel if pack else 0, b.dtype)
    j = 0
    while j < n:
        width = min(panel, n - j)
        k0 = 0
        while True:  # once where k is 0: c = beta c
            kc = min(kb, k - k0)
            src, bo, ld = flat, k0 * ldb + j, ldb
            if pack:  # rows k0..k0+kc of the panel, one after another (from flat: contiguous
                # to Numba, so the copy vectorizes whatever b's layout type; unsigned indices:
                # with Numba's wraparound check on each it did not, and ran at 4 GB/s)
                for q in range(kc):
                    at, to = np.uint64((k0 + q) * ldb + j), np.uint64(q * panel)
                    for v in range(np.uint64(width)):
                        buf[to + v] = flat[at + v]
                src, bo, ld = buf, 0, panel
            for i in range(0, m, rows):
                _tile(a, i * sar + k0 * sac, sar, sac, src, bo, ld, c, i * ldc + j, ldc, kc,
                      alpha, beta if k0 == 0 else 1.0, min(rows, m - i), width, key)
            k0 += kc
            if k0 >= k:
                break
        j += width


@njit(nogil=True)
def packs(m, k, ldb, panel, itemsize, rows):
    """Whether gemm_tiles copies each panel of B (k x panel, rows ldb apart) into a contiguous
    block before its tiles read it: where B's rows lie a multiple of PACK_STRIDE bytes apart
    (all on the same few cache sets, so that they evict each other), B does not stay in L1
    (PACK_MIN_BYTES), its rows are longer than a panel, and at least PACK_MIN_BLOCKS blocks of
    rows of C read each panel. The small VGG's FC input gradient (64 x 4096 x 256, B rows of
    16 KiB): 19.5 -> 26.7 GFLOP/s on one thread; its FC's backward 10.5 -> 9.0 ms (CPU time of
    one thread, A/B in one process; AVX-512, float32). Rows 1-2 KiB apart (ResNet-18's Winograd
    and im2col GEMMs) gained alone (a 512 x 512 x 4608 GEMM 21 -> 55-69 GFLOP/s) but showed no
    gain within the network, and rows 3136 bytes apart (the MLP's weight gradient) lost 4-9% of
    a step packed: there, the copy costs what it saves. On a Zen 4 (AVX-512 done in two halves,
    32 KiB of L1), where rows 16 KiB apart cost little, packed and in place run alike (one
    thread, 64 x 2048 x 256: 101 and 112 GFLOP/s; 256 x 4096 x 512: 105 and 100): the copy must
    be cheap for that, and with a wraparound check on each index it ran at 4 GB/s and halved
    the tiles' rate (55 GFLOP/s, the small VGG's FC backward 4.9 ms instead of 1.9)."""
    return (ldb > panel and (ldb * itemsize) % PACK_STRIDE == 0
            and k * ldb * itemsize > PACK_MIN_BYTES and m >= PACK_MIN_BLOCKS * rows)


@njit(nogil=True)
def gemm_tiles_nt(alpha, a, b, beta, c, key):
    """c = alpha a b^T + beta c (c is not read where beta is 0): every element an inner product
    of a row of a and a row of b, K a chunk at a time. `key` as gemm_tiles's."""
    literally(key)
    _, _, rows, cols, _, _ = _blocking(key)
    m, n = c.shape
    k = a.shape[1]
    lda, ldb, ldc = a.strides[0] // a.itemsize, b.strides[0] // b.itemsize, c.strides[0] // c.itemsize
    chunk = NT_CHUNK // c.itemsize
    k0 = 0
    while True:
        kc = min(chunk, k - k0)
        for j in range(0, n, cols):
            for i in range(0, m, rows):
                _tile_nt(a, i * lda + k0, lda, b, j * ldb + k0, ldb, c, i * ldc + j, ldc, kc, alpha,
                         beta if k0 == 0 else 1.0, min(rows, m - i), min(cols, n - j), key)
        k0 += kc
        if k0 >= k:
            break


def _entry(key):
    """The C-callable GEMM on the tiles of geometry `key` (see entry): made in a
    function so that each geometry is a function of its own (Numba's cache tells closures apart
    by their cells)."""
    def entry(ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc):
        a = carray(pa, (k if ta else m, lda))[:, :(m if ta else k)]
        b = carray(pb, (n if tb else k, ldb))[:, :(k if tb else n)]
        c = carray(pc, (m, ldc))[:, :n]
        if tb:
            call(gemm_tiles_nt, (alpha, a, b, beta, c), key)
        else:
            call(gemm_tiles, (ta != 0, alpha, a, b, beta, c), key)
    return entry


def entry_signature(real):
    """The C signature of entry's function: (ta, tb, m, n, k, alpha, a, lda, b, ldb,
    beta, c, ldc), CBLAS's row-major sgemm/dgemm with flags for the transposes (tb set: C = A B^T,
    ta must be clear) and pointers to `real`; every integer an intp."""
    i, p = types.intp, types.CPointer(real)
    return types.void(i, i, i, i, i, real, p, i, p, i, real, p, i)


def entry(real, key):
    """The tiles of geometry `key` as one C-callable function for `real` (a Numba float type):
    a numba CFunc, not compiled yet (its compile() loads it from the cache or compiles it; then
    `address` is what to call). The kernels call it by address (blas.py) rather than each
    compiling the tiles' 54 bodies into its own code (a first run compiled them once per kernel
    that calls a GEMM: 20 s of digits.net's 57 s of compiling). It calls the two drivers by
    symbol (linking.py), each compiled once: compiled into it, they took 4 s more."""
    fn = _entry(key)
    sig = entry_signature(real)
    with caching_in(fn.__module__):
        made = CFunc(fn, (sig.args, sig.return_type), locals={}, options={"nogil": True})
        made.enable_caching()
    return keep_reload_steps(tolerant(made))


def load_cached(made) -> bool:
    """Load an entry() from the cache where it is there (then True); compile nothing."""
    compile_uncached = made._compile_uncached
    made._compile_uncached = _not_cached  # CFunc.compile loads, else compiles: not here
    try:
        made.compile()
        return True
    except _NotCached:
        return False
    finally:
        made._compile_uncached = compile_uncached


class _NotCached(Exception):
    pass


def _not_cached():
    raise _NotCached
