"""Calls by symbol: a kernel that calls a compiled function through a name given to LLVM, rather
than compiling the callee's code into its own.

Numba links a callee, and all it calls, into every caller and optimizes the whole again: a
launcher recompiled its part (1-10 s each), the tiles' C entry both tile drivers (4 s). Here the
callee is compiled (or loaded from the cache) on its own, once, and its address bound to a name of
the callee and its argument types (bind); the caller's code declares that name and calls it, so
the caller compiles in a fraction of a second. The caller's code in Numba's cache names the
symbol too, and LLVM, finding no such symbol when it loads that code, would end the process: so
the caller's compile result carries a reload step (Numba runs those before it loads cached code)
that binds the same callee for the same types first, in whatever process loads it.

A function that calls by symbol is therefore a part, an outlined function, or inlined into one
(inline=True): Numba passes a callee's reload steps on to a caller that links it only when the
callee was compiled in that process; a plain kernel loaded from the cache and then linked into a
new caller leaves that caller's cached code naming a symbol that nothing binds (it ended the
process that loaded it: seen with F(4x4)'s transforms, and with the Winograd padding when its
channels-last copy became outlined; tests/runtime/test_parts.py checks the rule)."""
from __future__ import annotations

import functools
import hashlib
import importlib

from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.callconv import excinfo_t
from numba.core.imputils import impl_ret_new_ref
from numba.extending import intrinsic

_bound: dict = {}  # symbol -> the callee's compile result, kept alive with its code
_before: dict = {}  # a dispatcher's Python function -> a step to run before it is first bound


def symbol(fn, argtypes) -> str:
    """The name callers call the dispatcher `fn` by, for these argument types: the same in
    every process (a cached caller's code holds it)."""
    py = fn.py_func
    h = hashlib.sha256(repr(tuple(argtypes)).encode()).hexdigest()[:20]
    return f"netc.call.{py.__module__}.{py.__qualname__}.{h}"


def bind(fn, argtypes) -> str:
    """Compile `fn` for `argtypes` (or load it from the cache) and give LLVM its address under
    symbol()'s name, once per process; returns the name."""
    argtypes = tuple(argtypes)
    name = symbol(fn, argtypes)
    if name not in _bound:
        step = _before.pop(fn.py_func, None)
        if step is not None:
            step()
        fn.compile(argtypes)
        _bind(name, fn.overloads[argtypes])
    return name


def before_binding(fn, step):
    """Run step() once, before the dispatcher `fn` is first bound in this process: before any
    code that calls it by symbol is compiled or loaded here, so before any such code runs."""
    _before[fn.py_func] = step


def _bind(name, cres):
    llvm.add_symbol(name, cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))
    _bound[name] = cres


def outlined(fn):
    """Have every kernel that calls the dispatcher `fn` call it by symbol, its code compiled once
    on its own rather than into each caller (for helpers that are big to compile and called
    from several kernels: the im2col unfolding took 2.5-3 s, again in each CONV part): each of
    its compiled versions replaces the call Numba would emit (declare, call, link the callee's
    code in) with a call of its symbol and the caller's reload step (the caller's call sites
    are plain calls). A constant argument at a call site (a flag passed as True in one caller
    and False in another) compiles the version for its plain type, shared by every such site,
    not one version per value, as Numba would for a literal (the im2col unfolding's `fill` and
    the Winograd transform's `add` each compiled twice more for each data type, 0.3-0.9 s each);
    so an outlined function takes no literal arguments (`numba.literally`)."""
    add = fn.add_overload
    template = fn.get_call_template

    def get_call_template(args, kws):
        return template(tuple(types.unliteral(a) for a in args),
                        {k: types.unliteral(v) for k, v in kws.items()})

    def add_overload(cres):
        add(cres)  # (Numba has just inserted its own call of this version: replaced here)
        if not cres.objectmode:
            _call_by_symbol(fn, cres)

    fn.add_overload, fn.get_call_template = add_overload, get_call_template
    return fn


def _call_by_symbol(fn, cres):
    argtypes = tuple(cres.signature.args)
    name = symbol(fn, argtypes)
    _bind(name, cres)
    fndesc = cres.fndesc

    def call_by_symbol(context, builder, sig, args):
        value = _call(context, builder, fn, name, fndesc.restype, argtypes, args)
        return impl_ret_new_ref(context, builder, fndesc.restype, value)

    call_by_symbol.signature = fndesc.argtypes
    call_by_symbol.libs = ()
    selector = fn.targetctx._defns[cres.entry_point]
    selector.versions[:] = [(fndesc.argtypes, call_by_symbol)]
    selector._cache.clear()


def _call(context, builder, fn, name, restype, argtypes, values):
    """fn(*values) through its symbol `name`, in the code being lowered; an exception it raises
    goes on to the caller's caller. Returns fn's value."""
    status, value = _call_status(context, builder, fn, name, restype, argtypes, values)
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
    return value


def _call_status(context, builder, fn, name, restype, argtypes, values):
    """(status, value) of fn(*values) through its symbol `name`, in the code being lowered. The
    library being lowered gets the step that binds fn for argtypes before its code loads from
    the cache (it passes its steps on to whatever links it)."""
    fnty = context.call_conv.get_function_type(restype, argtypes)
    callee = cgutils.get_or_insert_function(builder.module, fnty, name)
    status, value = context.call_conv.call_function(builder, callee, restype, argtypes, values)
    py = fn.py_func
    context.active_code_library._reload_init.add(
        functools.partial(_rebind, py.__module__, py.__qualname__, tuple(argtypes)))
    return status, value


def _rebind(module, qualname, argtypes):
    """bind() the dispatcher `qualname` of `module` (a cached caller's reload step)."""
    fn = importlib.import_module(module)
    for name in qualname.split("."):
        fn = getattr(fn, name)
    bind(fn, argtypes)


def keep_reload_steps(made):
    """Have a numba CFunc's compile result carry its code's reload steps: a CFunc lowers without
    putting them there (dispatchers do), and its cached code would load with no callee bound."""
    compile_uncached = made._compile_uncached

    def compile_keeping_reload_steps():
        cres = compile_uncached()
        cres.reload_init.extend(step for step in cres.library._reload_init
                                if step not in cres.reload_init)
        return cres

    made._compile_uncached = compile_keeping_reload_steps
    return made


def emit(context, builder, fn, argtypes, values):
    """fn(*values) by its bound symbol, for call() and blas.py's lowered gemm."""
    _call(context, builder, fn, _bind_returning_nothing(fn, argtypes), types.none, argtypes,
          values)
    return context.get_dummy_value()


def _bind_returning_nothing(fn, argtypes) -> str:
    """bind(fn, argtypes), for a call that takes no value back (emit's, run_parts'): a TypeError
    where that version of fn returns one."""
    name = bind(fn, argtypes)
    if fn.overloads[argtypes].signature.return_type != types.none:
        raise TypeError(f"{fn.py_func.__qualname__} returns a value: calls by symbol from emit() "
                        "and run_parts() are of functions that return nothing")
    return name


@intrinsic(prefer_literal=True)
def call(typingctx, fn, args, last):
    """fn(*args, last), by symbol (fn a dispatcher that returns nothing, args a tuple); `last`
    apart from the tuple keeps a constant's literal type (the tiles' geometry key), which a
    tuple would lose."""
    if not isinstance(fn, types.Dispatcher) or not isinstance(args, types.BaseTuple):
        return None
    argtypes = (*args.types, last)

    def codegen(context, builder, sig, llargs):
        values = [*cgutils.unpack_tuple(builder, llargs[1]), llargs[2]]
        return emit(context, builder, fn.dispatcher, argtypes, values)
    return types.none(fn, args, last), codegen


@intrinsic
def run_parts(typingctx, part, parts, args):
    """part(t, parts, *args) for every t < parts, on Numba's threads: a launcher's whole body
    (jit.launcher). What `for t in prange(parts)` around a call did, without Numba's parallel
    compiler: lowering a prange, however small its body, runs the parfor passes and compiles
    the body again as a gufunc (0.3-0.7 s a launcher, for each part and float type; 0.1-0.2 s
    this way), where this is a plain kernel's call of Numba's threading layer
    (numba_parallel_for, as the prange's gufunc calls it) with a small function of its own that
    calls the part by symbol for each t of the range a thread is given. The range passes as
    pointers' values (base 0, a step of 1 byte: the layer offsets each thread's pointer by its
    first t and never reads through it); the part's arguments (their arrays borrowed:
    _borrowed), its `parts` and the first error a part returns pass in one struct (`data`, the
    same for every thread). An exception a part raises goes on to the launcher's caller once
    every part has ended."""
    if (not isinstance(part, types.Dispatcher) or not isinstance(parts, types.Integer)
            or not isinstance(args, types.BaseTuple)):
        return None
    argtypes = (types.int64, parts, *args.types)

    def codegen(context, builder, sig, llargs):
        from numba.core.typed_passes import _reload_parfors
        from numba.np.ufunc.parallel import _launch_threads
        _launch_threads()  # (binds numba_parallel_for and get_num_threads for LLVM)
        name = _bind_returning_nothing(part.dispatcher, argtypes)
        library = context.active_code_library
        library._reload_init.add(_reload_parfors)  # (binds them before cached code loads)
        i8p = ir.IntType(8).as_pointer()
        i32, i64 = ir.IntType(32), ir.IntType(64)
        intp = context.get_value_type(types.intp)
        excinfo_p = ir.PointerType(excinfo_t)
        data_t = ir.LiteralStructType([llargs[2].type, llargs[1].type, i32, excinfo_p])

        # the function each thread calls: fn(args, dims, steps, data) for its ts
        fnty = ir.FunctionType(ir.VoidType(), [i8p.as_pointer(), intp.as_pointer(),
                                               intp.as_pointer(), i8p])
        fn = ir.Function(builder.module, fnty, builder.module.get_unique_name("netc.parts"))
        fn.linkage = "internal"
        first, dims, _, data_arg = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        data = b.bitcast(data_arg, data_t.as_pointer())
        tup = b.load(b.gep(data, [i32(0), i32(0)]))
        n_parts = b.load(b.gep(data, [i32(0), i32(1)]))
        start = b.ptrtoint(b.load(first), i64)
        stop = b.add(start, b.load(dims))
        values = cgutils.unpack_tuple(b, tup)
        with cgutils.for_range_slice(b, start, stop, i64(1)) as (t, _):
            status, _ = _call_status(context, b, part.dispatcher, name, types.none, argtypes,
                                     [t, n_parts, *values])
            with cgutils.if_unlikely(b, status.is_error):
                code = b.gep(data, [i32(0), i32(2)])
                old = b.cmpxchg(code, i32(0), status.code, "monotonic", "monotonic")
                with b.if_then(b.extract_value(old, 1)):  # the first part to fail
                    b.store(status.excinfoptr, b.gep(data, [i32(0), i32(3)]))
        b.ret_void()

        # here: the data, the range and the call of the threading layer
        slot = cgutils.alloca_once(builder, data_t)
        builder.store(ir.Constant(data_t, None), slot)
        builder.store(_borrowed(context, builder, args, llargs[2]),
                      builder.gep(slot, [i32(0), i32(0)]))
        builder.store(llargs[1], builder.gep(slot, [i32(0), i32(1)]))
        base = cgutils.alloca_once(builder, i8p)
        builder.store(ir.Constant(i8p, None), base)
        count = cgutils.alloca_once(builder, intp)
        builder.store(context.cast(builder, llargs[1], parts, types.intp), count)
        step = cgutils.alloca_once(builder, intp)
        builder.store(intp(1), step)
        mod = builder.module
        threads = builder.call(cgutils.get_or_insert_function(
            mod, ir.FunctionType(intp, []), "get_num_threads"), [])
        parallel_for = cgutils.get_or_insert_function(
            mod, ir.FunctionType(ir.VoidType(), [i8p] * 5 + [intp] * 3), "numba_parallel_for")
        with builder.if_then(builder.icmp_signed(">", llargs[1], llargs[1].type(0))):
            builder.call(parallel_for, [builder.bitcast(fn, i8p), builder.bitcast(base, i8p),
                                        builder.bitcast(count, i8p), builder.bitcast(step, i8p),
                                        builder.bitcast(slot, i8p), intp(0), intp(1), threads])
        code = builder.load(builder.gep(slot, [i32(0), i32(2)]))
        with cgutils.if_unlikely(builder, builder.icmp_signed("!=", code, i32(0))):
            status = context.call_conv._get_return_status(
                builder, code, builder.load(builder.gep(slot, [i32(0), i32(3)])))
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()
    return types.none(part, parts, args), codegen


def _borrowed(context, builder, ty, value):
    """`value` (of Numba type `ty`) with every array in it, tuples' included, borrowed: its
    meminfo and parent null, so that the views a part takes of it change no reference count.
    The threads' parts share the launcher's arrays, and each view of one was an atomic increment
    and decrement of the one count: a part that takes a view a row bounced that count's cache
    line between the cores (the im2col CONV's backward split by filters ran 1.4-5.6x slower). A
    prange's body gets its arrays the same way; the launcher holds them until its parts end."""
    if isinstance(ty, types.Array):
        ary = context.make_array(ty)(context, builder, value=value)
        ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
        ary.parent = cgutils.get_null_value(ary.parent.type)
        return ary._getvalue()
    if isinstance(ty, types.BaseTuple):
        items = [_borrowed(context, builder, t, builder.extract_value(value, i))
                 for i, t in enumerate(ty.types)]
        return context.make_tuple(builder, ty, items)
    return value
