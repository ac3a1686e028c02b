"""How an IRS2 uncal file stores its frames, checked at the file boundary.

NIRSpec IRS2 readouts (READPATT ``NRSIRS2`` / ``NRSIRS2RAPID``) are full frame only: the
SCI cube is ``(nints, ngroups, 3200, 2048)`` (DMS frame: the 3200 samples of a detector
row, reference output and interleaved reference samples included, run along DMS y),
while SUBSIZE1 x SUBSIZE2 = 2048 x 2048 give the image after the reference-pixel step.
The sample layout itself is :class:`nirbeam.transforms.irs2.IRS2Layout`.
"""

from __future__ import annotations

from nirbeam.transforms.irs2 import NROWS, IRS2Layout, is_irs2, layout_for

__all__ = ["NROWS", "is_irs2_header", "check_irs2_header", "raw_shape"]


def is_irs2_header(primary) -> bool:
    """True when the PRIMARY header says READPATT NRSIRS2 or NRSIRS2RAPID."""
    return str(primary.get("READPATT", "")).strip().upper().startswith("NRSIRS2")


def check_irs2_header(primary, sci, path: str) -> tuple[int, int]:
    """Check an IRS2 file's keywords against its SCI shape; return (NRS_NORM, NRS_REF).

    Raises
    ------
    BadInputError
        Naming the file, extension and keyword: a subarray (IRS2 is full frame only),
        NRS_NORM/NRS_REF that give another width than NAXIS2, NAXIS1 not 2048.
    """
    from nirbeam.stream.uncal import BadInputError

    readpatt = str(primary.get("READPATT", "")).strip().upper()

    def kw(key, default):
        v = primary.get(key, default)
        try:
            return int(v)
        except (TypeError, ValueError):
            raise BadInputError(path, f"keyword {key}={v!r} is not a valid int", "PRIMARY",
                                key) from None

    n, r = kw("NRS_NORM", 16), kw("NRS_REF", 4)
    try:
        lay = IRS2Layout(n, r)
    except ValueError as exc:
        raise BadInputError(path, str(exc), "PRIMARY", "NRS_NORM") from None
    sub = str(primary.get("SUBARRAY", "FULL")).strip().upper()
    s1, s2 = kw("SUBSIZE1", NROWS), kw("SUBSIZE2", NROWS)
    if sub not in ("FULL", "") or (s1, s2) != (NROWS, NROWS):
        raise BadInputError(
            path, f"READPATT={readpatt} with SUBARRAY={sub!r}, SUBSIZE1/2 = {s1}x{s2}: IRS2 "
            f"exposures are full frame ({NROWS}x{NROWS}); an IRS2 subarray cannot be "
            "reference-corrected (jwst neither)", "PRIMARY", "SUBARRAY")
    nx, ny = sci["NAXIS1"], sci["NAXIS2"]
    if (nx, ny) != (NROWS, lay.width):
        raise BadInputError(
            path, f"READPATT={readpatt}, NRS_NORM={n}, NRS_REF={r}: SCI frames should be "
            f"{NROWS} x {lay.width} (NAXIS1 x NAXIS2, the interleaved reference samples "
            f"along NAXIS2), the file has {nx} x {ny}", "SCI", "NAXIS2")
    return n, r


def raw_shape(meta) -> tuple[int, int, int]:
    """(ngroups, ny, nx) of one integration as stored: (ngroups, 3200, 2048) for IRS2."""
    if is_irs2(meta) and meta.subsize2 == NROWS:
        return (meta.ngroups, layout_for(meta).width, meta.subsize1)
    return meta.shape
