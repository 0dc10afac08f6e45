"""netc's own GEMM for B with contiguous rows: C = alpha op(A) B + beta C in register tiles.

LLVM vectorizes netc's loops well enough where one operand streams (the direct CONV's taps), but
a GEMM needs its partial sums held in registers across the whole K loop, which no loop written in
Numba gets. So the tile is written in LLVM's own vector IR through Numba's `@intrinsic`: a block
of ROWS rows of C by up to four 64-byte vectors (6 x 64 floats: 24 accumulators, 4 row loads and
6 broadcasts per 24 fused multiply-adds), summed over all of K in registers and written once:
what a BLAS's inner kernel does on AVX-512 (rates against OpenBLAS: bench/RESULTS.md).

B and C need contiguous rows (C = op(A) B, not B^T): that is the row that a vector loads. A is
read one element at a time (broadcast), so A or A^T are the same to the tile. No packing: the
shapes netc sends here keep a 64-wide panel of B in L1 or L2.

`gemm_tiles` (C = op(A) B) and `gemm_tiles_nt` (C = A B^T, inner products) are the Numba-side
drivers; blas.py's gemm calls them on CPUs with AVX-512 (where the vectors are registers:
elsewhere LLVM splits them, which is correct and slower than the BLAS).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..cache import njit

ROWS = 6     # rows of C per tile
VECTORS = 4  # 64-byte vectors per row of a full-width tile
NT_ROWS, NT_COLS = 4, 6  # C = A B^T: rows of A and rows of B per tile (24 accumulators)
NT_CHUNK = 4096  # bytes of a row of K per pass: longer, and fewer sums across lanes per product
_I32, _I64 = ir.IntType(32), ir.IntType(64)


class _Vectors:
    """The vector type of 64 bytes of `elem` and the LLVM intrinsics both tiles use on it."""

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
def _tile(typingctx, a, ao, sar, sac, b, bo, ldb, c, co, ldc, k, alpha, beta, rows, width):
    """C[co + r*ldc + j] = alpha sum_k A[ao + r*sar + k*sac] B[bo + k*ldb + j] + beta C[...] for
    r < rows (1..ROWS) and j < width (1..VECTORS*lanes), where lanes = 64 bytes of the arrays'
    type: a full tile, or as many vectors as cover width with the last one masked. Offsets and strides
    in elements; a, b, c are arrays of one float type, used only for their data pointers."""
    if not _float_arrays(a, b, c):
        return None
    sig = types.void(a, types.intp, types.intp, types.intp, b, types.intp, types.intp, c,
                     types.intp, types.intp, types.intp, c.dtype, c.dtype, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        a_, ao_, sar_, sac_, b_, bo_, ldb_, c_, co_, ldc_, k_, alpha_, beta_, rows_, width_ = args
        elem = context.get_data_type(c.dtype)
        lanes = 64 // context.get_abi_sizeof(elem)
        pa, pb, pc = _pointers(context, builder, ((a, a_, ao_), (b, b_, bo_), (c, c_, co_)))
        done = builder.append_basic_block("tile.done")
        # which body: a full-width tile, or 1-4 vectors with the last one masked, times the rows
        cases = [(VECTORS, False, r) for r in range(1, ROWS + 1)]
        cases += [(nv, True, r) for nv in range(1, VECTORS + 1) for r in range(1, ROWS + 1)]
        full = builder.icmp_signed("==", width_, ir.Constant(_I64, VECTORS * lanes))
        vectors = builder.sdiv(builder.add(width_, ir.Constant(_I64, lanes - 1)), ir.Constant(_I64, lanes))
        kind = builder.select(full, ir.Constant(_I64, 0), vectors)
        key = builder.add(builder.mul(kind, ir.Constant(_I64, ROWS)),
                          builder.sub(rows_, ir.Constant(_I64, 1)))
        last = builder.sub(width_, builder.mul(builder.sub(vectors, ir.Constant(_I64, 1)),
                                               ir.Constant(_I64, lanes)))
        switch = builder.switch(key, done)
        for i, (nv, masked, r) in enumerate(cases):
            block = builder.append_basic_block(f"tile.{i}")
            switch.add_case(ir.Constant(_I64, i), block)
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
def _tile_nt(typingctx, a, ao, lda, b, bo, ldb, c, co, ldc, k, alpha, beta, rows, cols):
    """C[co + r*ldc + j] = alpha sum_k A[ao + r*lda + k] B[bo + j*ldb + k] + beta C[...] for
    r < rows (1..NT_ROWS), j < cols (1..NT_COLS): C = A B^T, with K contiguous in both."""
    if not _float_arrays(a, b, c):
        return None
    sig = types.void(a, types.intp, types.intp, b, types.intp, types.intp, c, types.intp,
                     types.intp, types.intp, c.dtype, c.dtype, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        a_, ao_, lda_, b_, bo_, ldb_, c_, co_, ldc_, k_, alpha_, beta_, rows_, cols_ = args
        elem = context.get_data_type(c.dtype)
        lanes = 64 // context.get_abi_sizeof(elem)
        pa, pb, pc = _pointers(context, builder, ((a, a_, ao_), (b, b_, bo_), (c, c_, co_)))
        done = builder.append_basic_block("nt.done")
        key = builder.add(builder.mul(builder.sub(rows_, ir.Constant(_I64, 1)), ir.Constant(_I64, NT_COLS)),
                          builder.sub(cols_, ir.Constant(_I64, 1)))
        switch = builder.switch(key, done)
        for r in range(1, NT_ROWS + 1):
            for j in range(1, NT_COLS + 1):
                block = builder.append_basic_block(f"nt.{r}.{j}")
                switch.add_case(ir.Constant(_I64, (r - 1) * NT_COLS + j - 1), block)
                with builder.goto_block(block):
                    _emit_nt(builder, elem, lanes, pa, lda_, pb, ldb_, pc, ldc_, k_, alpha_, beta_, r, j)
                    builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()
    return sig, codegen


@njit(nogil=True)
def gemm_tiles(ta, alpha, a, b, beta, c):
    """c = alpha op(a) b + beta c (c is not read where beta is 0), op(a) = a.T where ta is set;
    b's and c's rows contiguous, a's elements contiguous within a row."""
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    lda, ldb, ldc = a.strides[0] // a.itemsize, b.strides[0] // b.itemsize, c.strides[0] // c.itemsize
    sar, sac = (1, lda) if ta else (lda, 1)
    lanes = 64 // c.itemsize
    j = 0
    while j < n:
        width = min(VECTORS * lanes, n - j)
        for i in range(0, m, ROWS):
            _tile(a, i * sar, sar, sac, b, j, ldb, c, i * ldc + j, ldc, k, alpha, beta,
                  min(ROWS, m - i), width)
        j += width


@njit(nogil=True)
def gemm_tiles_nt(alpha, a, b, beta, c):
    """c = alpha a b^T + beta c (c is not read where beta is 0): every element an inner product
    of a row of a and a row of b, K a chunk at a time."""
    m, n = c.shape
    k = a.shape[1]
    lda, ldb, ldc = a.strides[0] // a.itemsize, b.strides[0] // b.itemsize, c.strides[0] // c.itemsize
    chunk = NT_CHUNK // c.itemsize
    k0 = 0
    while True:
        kc = min(chunk, k - k0)
        for j in range(0, n, NT_COLS):
            for i in range(0, m, NT_ROWS):
                _tile_nt(a, i * lda + k0, lda, b, j * ldb + k0, ldb, c, i * ldc + j, ldc, kc, alpha,
                         beta if k0 == 0 else 1.0, min(NT_ROWS, m - i), min(NT_COLS, n - j))
        k0 += kc
        if k0 >= k:
            break
