"""`prefetch(array, index)`: a cache hint for compiled (numba) code.

The learning kernel and the history table read rows in random order, so each read
waits on memory; asking for the rows of a few triplets ahead overlaps those waits
(about 1.5x on the kernel benchmark). Compiles to LLVM's `llvm.prefetch` (for writing,
as the rows are updated next; high locality; data cache): a hint, never a fault.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I32 = ir.IntType(32)
_BYTE_POINTER = ir.IntType(8).as_pointer()


@intrinsic
def _prefetch(typingctx: Any, array: types.Array, index: types.Integer) -> Any:
    """Hint that `array[index]` (its first element, for a row of a 2-d array) is used soon."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        array_type = signature.args[0]
        data = context.make_array(array_type)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        indices = [args[1], *([zero] * (array_type.ndim - 1))]
        pointer = cgutils.get_item_pointer(  # type: ignore[no-untyped-call]
            context, builder, array_type, data, indices, wraparound=False
        )
        hint = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module,
            ir.FunctionType(ir.VoidType(), [_BYTE_POINTER, _I32, _I32, _I32]),
            "llvm.prefetch.p0i8",
        )
        write, keep_close, data_cache = (ir.Constant(_I32, v) for v in (1, 3, 1))
        builder.call(hint, [builder.bitcast(pointer, _BYTE_POINTER), write, keep_close, data_cache])
        return context.get_dummy_value()

    return types.void(array, index), codegen


# What callers see (numba compiles calls to the intrinsic object itself).
prefetch = cast(Callable[[np.ndarray, int], None], _prefetch)
