"""Calls by symbol: a kernel that calls a compiled function through a name given to LLVM, rather
than compiling the callee's code into its own.

Numba links a callee, and all it calls, into every caller and optimizes the whole again: a
launcher recompiled its part (1-10 s each), the tiles' C entry both tile drivers (4 s). Here the
callee is compiled (or loaded from the cache) on its own, once, and its address bound to a name of
the callee and its argument types (bind); the caller's code declares that name and calls it, so
the caller compiles in a fraction of a second. The caller's code in Numba's cache names the
symbol too, and LLVM, finding no such symbol when it loads that code, would end the process: so
the caller's compile result carries a reload step (Numba runs those before it loads cached code)
that binds the same callee for the same types first, in whatever process loads it."""
from __future__ import annotations

import functools
import hashlib
import importlib

from llvmlite import binding as llvm
from numba import types
from numba.core import cgutils
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
    symbol()'s name, once per process; returns the name. `fn` must return nothing."""
    argtypes = tuple(argtypes)
    name = symbol(fn, argtypes)
    if name not in _bound:
        fn.compile(argtypes)
        cres = fn.overloads[argtypes]
        if cres.signature.return_type != types.none:
            raise TypeError(f"{fn.py_func.__qualname__} returns {cres.signature.return_type}: "
                            "a function called by symbol returns nothing")
        llvm.add_symbol(name, cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))
        _bound[name] = cres
    return name


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


def _emit(context, builder, fn, argtypes, values):
    """fn(*values) by its bound symbol; an exception it raises goes on to the caller's caller."""
    fnty = context.call_conv.get_function_type(types.none, argtypes)
    callee = cgutils.get_or_insert_function(builder.module, fnty, bind(fn, argtypes))
    py = fn.py_func  # (the caller's library passes its reload steps on to whatever links it)
    context.active_code_library._reload_init.add(
        functools.partial(_rebind, py.__module__, py.__qualname__, tuple(argtypes)))
    status, _ = context.call_conv.call_function(builder, callee, types.none, argtypes, values)
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
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
        return _emit(context, builder, fn.dispatcher, argtypes, values)
    return types.none(fn, args, last), codegen


@intrinsic
def run_part(typingctx, part, t, parts, args):
    """part(t, parts, *args), by symbol: a launcher's call of its part (jit.launcher)."""
    if not isinstance(part, types.Dispatcher) or not isinstance(args, types.BaseTuple):
        return None
    argtypes = (t, parts, *args.types)

    def codegen(context, builder, sig, llargs):
        values = [llargs[1], llargs[2], *cgutils.unpack_tuple(builder, llargs[3])]
        return _emit(context, builder, part.dispatcher, argtypes, values)
    return types.none(part, t, parts, args), codegen
