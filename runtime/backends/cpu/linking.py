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
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_new_ref
from numba.extending import intrinsic

_bound: dict = {}  # symbol -> the callee's compile result, kept alive with its code


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
        fn.compile(argtypes)
        _bind(name, fn.overloads[argtypes])
    return name


def _bind(name, cres):
    llvm.add_symbol(name, cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))
    _bound[name] = cres


def outlined(fn):
    """Have every kernel that calls the dispatcher `fn` call it by symbol, its code compiled once
    on its own rather than into each caller (for helpers that are big to compile and called
    from several kernels: the im2col unfolding took 2.5-3 s, again in each CONV part): each of
    its compiled versions replaces the call Numba would emit (declare, call, link the callee's
    code in) with a call of its symbol and the caller's reload step (the caller's call sites
    are plain calls)."""
    add = fn.add_overload

    def add_overload(cres):
        add(cres)  # (Numba has just inserted its own call of this version: replaced here)
        if not cres.objectmode:
            _call_by_symbol(fn, cres)

    fn.add_overload = add_overload
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
    goes on to the caller's caller. The library being lowered gets the step that binds fn for
    argtypes before its code loads from the cache (it passes its steps on to whatever links
    it). Returns fn's value."""
    fnty = context.call_conv.get_function_type(restype, argtypes)
    callee = cgutils.get_or_insert_function(builder.module, fnty, name)
    status, value = context.call_conv.call_function(builder, callee, restype, argtypes, values)
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
    py = fn.py_func
    context.active_code_library._reload_init.add(
        functools.partial(_rebind, py.__module__, py.__qualname__, tuple(argtypes)))
    return value


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
    """fn(*values) by its bound symbol, for call(), run_part() and blas.py's lowered gemm."""
    name = bind(fn, argtypes)
    if fn.overloads[argtypes].signature.return_type != types.none:
        raise TypeError(f"{fn.py_func.__qualname__} returns a value: calls by emit() are of "
                        "functions that return nothing")
    _call(context, builder, fn, name, types.none, argtypes, values)
    return context.get_dummy_value()


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
def run_part(typingctx, part, t, parts, args):
    """part(t, parts, *args), by symbol: a launcher's call of its part (jit.launcher)."""
    if not isinstance(part, types.Dispatcher) or not isinstance(args, types.BaseTuple):
        return None
    argtypes = (t, parts, *args.types)

    def codegen(context, builder, sig, llargs):
        values = [llargs[1], llargs[2], *cgutils.unpack_tuple(builder, llargs[3])]
        return emit(context, builder, part.dispatcher, argtypes, values)
    return types.none(part, t, parts, args), codegen
