"""A cache prefetch hint for compiled (numba) loops.

The reference check of codec motion (``mvm.motion.codec._best_distance_loop``) reads a 4x4
lattice of luma points per vector in frames spread over a window's planes (about 8 MB for a
65-frame 340x604 window, beyond a core's L2), at addresses no hardware prefetcher can guess:
two thirds of its time went to waiting for those reads (measured by pointing every read at one
frame). Asking for the rows of a vector a few vectors ahead lets those waits overlap the work
on the current one. A prefetch never changes a value and never faults, whatever the address.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["prefetch"]


@intrinsic
def prefetch(typingctx, array, index):
    """``prefetch(array, index)`` in a numba-compiled function: hint that ``array.flat[index]``
    (a contiguous 1-D array) will soon be read (``llvm.prefetch``: read, high locality, data).
    Index it as the read will; nothing is read or checked."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        i8p = ir.IntType(8).as_pointer()
        ptr = builder.bitcast(builder.gep(ary.data, [i]), i8p)
        i32 = ir.IntType(32)
        # declare_intrinsic mangles the name for the pointer type (p0 or p0i8, by LLVM version)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", [i8p], ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen
