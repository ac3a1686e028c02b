"""JWST data-quality bit values (stdatamodels ``dqflags``), as plain integers.

Group DQ uses the bits up to CHARGELOSS; pixel DQ uses all of them.
"""

GOOD = 0
DO_NOT_USE = 1
SATURATED = 2
JUMP_DET = 4
DROPOUT = 8
OUTLIER = 16
PERSISTENCE = 32
AD_FLOOR = 64
CHARGELOSS = 128
RESERVED_4 = 256
UNRELIABLE_ERROR = 256
NON_SCIENCE = 512
DEAD = 1024
HOT = 2048
WARM = 4096
LOW_QE = 8192
RC = 16384
TELEGRAPH = 32768
NONLINEAR = 65536
BAD_REF_PIXEL = 131072
NO_FLAT_FIELD = 262144
NO_GAIN_VALUE = 524288
NO_LIN_CORR = 1048576
NO_SAT_CHECK = 2097152
UNRELIABLE_BIAS = 4194304
UNRELIABLE_DARK = 8388608
UNRELIABLE_SLOPE = 16777216
UNRELIABLE_FLAT = 33554432
OPEN = 67108864
ADJ_OPEN = 134217728
UNRELIABLE_RESET = 268435456
MSA_FAILED_OPEN = 536870912
OTHER_BAD_PIXEL = 1073741824
REFERENCE_PIXEL = 2147483648

#: Name -> bit value, as written in the DQ_DEF table of reference files.
FLAGS = {
    name: value
    for name, value in dict(globals()).items()
    if name.isupper() and isinstance(value, int) and name not in ("RESERVED_4",)
}


def interpret(value: int) -> list[str]:
    """Return the names of the bits set in a DQ value (``GOOD`` for 0)."""
    value = int(value)
    if value == 0:
        return ["GOOD"]
    return [n for n, b in FLAGS.items() if b and value & b == b and n != "GOOD"]
