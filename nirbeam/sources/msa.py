"""Reader of NIRSpec MSA metadata files (``MSAMETFL``, ``*_msa.fits``).

Layout (jwst 3.0 ``assign_wcs.nirspec.get_open_msa_slits``; the archive's files):
``SHUTTER_IMAGE`` (the configuration as an image), ``SHUTTER_INFO`` (one row per open
shutter per MSA configuration and dither point: slitlet_id, msa_metadata_id,
shutter_quadrant, shutter_row, shutter_column, source_id, background Y/N, shutter_state,
estimated_source_in_shutter_x/y, dither_point_index, primary_source Y/N[, fixed_slit]) and
``SOURCE_INFO`` (program, source_id, source_name, alias, catalog_id, ra, dec,
preimage_id, stellarity).

The rules are jwst's: keep the rows with ``msa_metadata_id == MSAMETID`` and
``dither_point_index == PATT_NUM``; group them by slitlet (a fixed slit named in
``fixed_slit`` is its own slitlet); a slitlet without a primary shutter is a background
slitlet (its source id becomes its slitlet id, its name ``<prog>_BKG<slitlet>``); one
primary shutter gives the source (a negative source_id is a virtual slit; a source
missing from SOURCE_INFO gets the name ``<prog>_VRT<slitlet>``); more than one is an
error. Shutter columns run along the slitlet (the cross-dispersion direction), shutter
rows across it; the shutter state string has ``1`` open, ``0`` closed, ``x`` the primary
(for a background slitlet, the middle) shutter. Source positions are moved to the model
frame (``estimated_source_in_shutter - 0.5``; a missing estimate is the shutter centre).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from nirbeam.stream.uncal import BadInputError

__all__ = ["MSASlitlet", "MSAShutter", "read_msa", "read_shutters", "FIXED_SLITS", "SHUTTER_COLUMNS"]

FIXED_SLITS = ("S200A1", "S200A2", "S400A1", "S1600A1", "S200B1")
#: shutters per quadrant row along the slit direction (jwst: shutter_id = row + (col-1)*365)
SHUTTER_COLUMNS = 365
_SHUTTER_COLS = ("slitlet_id", "msa_metadata_id", "shutter_quadrant", "shutter_row", "shutter_column",
                 "source_id", "background", "shutter_state", "estimated_source_in_shutter_x",
                 "estimated_source_in_shutter_y", "dither_point_index", "primary_source")
_SOURCE_COLS = ("source_id", "source_name", "alias", "ra", "dec", "stellarity")
# jwst's slit_y_range and the 0.5 margin and 1.15 shutter pitch (slit-frame units)
_YLOW, _YHIGH, _MARGIN, _PITCH = -0.55, 0.55, 0.5, 1.15


@dataclass(frozen=True)
class MSAShutter:
    """One SHUTTER_INFO row kept for the exposure."""

    slitlet_id: int
    quadrant: int
    row: int
    column: int
    source_id: int
    background: bool
    primary: bool
    state: str
    est_x: float = 0.5
    est_y: float = 0.5
    fixed_slit: str = ""


@dataclass(frozen=True)
class MSASlitlet:
    """One open slitlet (or fixed slit) of an exposure, as jwst builds it.

    ``name`` is the slitlet id as a string (the level-2 SLTNAME), or the fixed slit's
    name. ``columns`` are the open shutters' columns (1-based, along the slit), ``ycen``
    the primary (or middle) shutter's column, ``xcen`` their row. ``ymin/ymax`` bound the
    slit in jwst's slit frame (shutter heights). ``source_xpos/ypos`` in the model frame
    (-0.5..0.5 from the shutter centre).
    """

    name: str
    slitlet_id: int | str
    quadrant: int
    xcen: int
    ycen: int
    columns: tuple[int, ...]
    shutter_id: int
    source_id: int
    source_name: str
    source_alias: str
    stellarity: float
    source_ra: float
    source_dec: float
    source_xpos: float
    source_ypos: float
    shutter_state: str
    ymin: float
    ymax: float
    background: bool
    fixed_slit: str = ""

    @property
    def virtual(self) -> bool:
        """A virtual slit: a source id below zero (no catalogued source)."""
        return self.source_id < 0

    @property
    def n_shutters(self) -> int:
        """Shutters spanned, open or closed (the length of ``shutter_state``)."""
        return len(self.shutter_state)


def _str(v) -> str:
    if isinstance(v, bytes):
        v = v.decode()
    return str(v).strip()


def _table(hdul, name, path, cols):
    try:
        t = hdul[(name, 1)].data
    except KeyError:
        raise BadInputError(path, f"no {name} table: not an MSA metadata file "
                            "(expected SHUTTER_IMAGE, SHUTTER_INFO, SOURCE_INFO)", name) from None
    have = {c.lower() for c in t.columns.names}
    for c in cols:
        if c not in have:
            raise BadInputError(path, f"missing column {c!r} (columns: {sorted(have)})", name, c)
    return t


def read_shutters(path: str, msa_metadata_id: int, dither_position: int) -> list[MSAShutter]:
    """The SHUTTER_INFO rows of one MSA configuration (``MSAMETID``) and dither point
    (``PATT_NUM``)."""
    path = str(path)
    if not os.path.isfile(path):
        raise BadInputError(path, "MSA metadata file (MSAMETFL) not found; give its folder "
                            "or the file next to the exposures", keyword="MSAMETFL")
    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"cannot open the MSA metadata file as FITS: {exc}") from None
    with hdul:
        t = _table(hdul, "SHUTTER_INFO", path, _SHUTTER_COLS)
        has_fs = "fixed_slit" in {c.lower() for c in t.columns.names}
        keep = (np.asarray(t["msa_metadata_id"]) == int(msa_metadata_id)) & (
            np.asarray(t["dither_point_index"]) == int(dither_position))
        rows = []
        for r in t[keep]:
            rows.append(MSAShutter(
                slitlet_id=int(r["slitlet_id"]), quadrant=int(r["shutter_quadrant"]),
                row=int(r["shutter_row"]), column=int(r["shutter_column"]),
                source_id=int(r["source_id"]), background=_str(r["background"]) == "Y",
                primary=_str(r["primary_source"]) == "Y", state=_str(r["shutter_state"]),
                est_x=float(np.nan_to_num(r["estimated_source_in_shutter_x"], nan=0.5)),
                est_y=float(np.nan_to_num(r["estimated_source_in_shutter_y"], nan=0.5)),
                fixed_slit=_str(r["fixed_slit"]) if has_fs else "",
            ))
        return rows


def _sources(path):
    with fits.open(path, memmap=False) as hdul:
        s = _table(hdul, "SOURCE_INFO", path, _SOURCE_COLS)
        return {int(r["source_id"]): (_str(r["source_name"]), _str(r["alias"]), float(r["stellarity"]),
                                      float(r["ra"]), float(r["dec"])) for r in s}


def _state_string(columns, ycen) -> str:
    allc = range(min(columns), max(columns) + 1)
    return "".join("x" if c == ycen else ("1" if c in columns else "0") for c in allc)


def read_msa(path: str, msa_metadata_id: int, dither_position: int, program: str | int = "") -> tuple[MSASlitlet, ...]:
    """The open slitlets of an exposure (see the module notes), in slitlet order of
    first appearance, as jwst ``get_open_msa_slits`` lists them.

    Raises
    ------
    BadInputError
        The file, extension (SHUTTER_INFO) and slitlet, for a slitlet with more than one
        primary shutter or a fixed slit mixed with MSA shutters; no rows for the given
        ``MSAMETID``/``PATT_NUM`` is an error too (naming both).
    """
    path = str(path)
    prog = str(program).strip() or _program(path)
    rows = read_shutters(path, msa_metadata_id, dither_position)
    if not rows:
        raise BadInputError(path, f"no SHUTTER_INFO rows with msa_metadata_id == {msa_metadata_id} "
                            f"(MSAMETID) and dither_point_index == {dither_position} (PATT_NUM)",
                            "SHUTTER_INFO", "MSAMETID")
    sources = _sources(path)
    groups: dict = {}
    for r in rows:
        key = r.fixed_slit if r.fixed_slit in FIXED_SLITS else r.slitlet_id
        groups.setdefault(key, []).append(r)
    out = []
    for sid, g in groups.items():
        is_fs = [r.fixed_slit in FIXED_SLITS for r in g]
        prim = [r for r in g if r.primary]
        where = f"slitlet {sid} (MSAMETID={msa_metadata_id}, PATT_NUM={dither_position})"
        if any(is_fs) and not (all(is_fs) and len(g) == 1):
            raise BadInputError(path, f"{where}: fixed slit mixed with MSA shutters (unsupported)",
                                "SHUTTER_INFO", "fixed_slit")
        if len(prim) > 1:
            raise BadInputError(path, f"{where}: {len(prim)} shutters marked primary_source=Y "
                                "(at most one)", "SHUTTER_INFO", "primary_source")
        columns = tuple(r.column for r in g)
        if all(is_fs):
            r = g[0]
            if not prim:
                continue  # jwst skips a fixed slit that is not a primary source
            info = sources.get(r.source_id, (f"{prog}_VRT{sid}", f"VRT{sid}", 0.0, 0.0, 0.0))
            xpos, ypos = r.est_x, r.est_y
            out.append(MSASlitlet(
                name=str(sid), slitlet_id=sid, quadrant=5, xcen=0, ycen=0, columns=columns,
                shutter_id=FIXED_SLITS.index(sid), source_id=r.source_id, source_name=info[0],
                source_alias=info[1], stellarity=info[2], source_ra=info[3], source_dec=info[4],
                source_xpos=xpos - 0.5, source_ypos=ypos - 0.5, shutter_state="x",
                ymin=_YLOW, ymax=_YHIGH, background=False, fixed_slit=sid))
            continue
        jmin, jmax = min(columns), max(columns)
        if not prim:
            j = columns[0] if len(columns) == 1 else jmin + (jmax - jmin) // 2
            xcen, quadrant = g[0].row, g[0].quadrant
            source_id = int(sid)
            info = (f"{prog}_BKG{sid}", f"BKG{sid}", 0.0, 0.0, 0.0)
            xpos = ypos = 0.5
            background = True
        else:
            srow = [r for r in g if not r.background]
            if not srow:
                raise BadInputError(path, f"{where}: a primary shutter but no row with background=N",
                                    "SHUTTER_INFO", "background")
            s = srow[0]
            j, xcen, quadrant = s.column, s.row, s.quadrant
            xpos, ypos = s.est_x, s.est_y
            source_id = prim[0].source_id
            info = sources.get(source_id, (f"{prog}_VRT{sid}", f"VRT{sid}", 0.0, 0.0, 0.0))
            background = False
        out.append(MSASlitlet(
            name=str(sid), slitlet_id=int(sid), quadrant=quadrant, xcen=xcen, ycen=j, columns=columns,
            shutter_id=int(xcen) + (int(j) - 1) * SHUTTER_COLUMNS, source_id=source_id,
            source_name=info[0], source_alias=info[1], stellarity=info[2], source_ra=info[3],
            source_dec=info[4], source_xpos=xpos - 0.5, source_ypos=ypos - 0.5,
            shutter_state=_state_string(columns, j),
            ymin=-(-_YLOW + _MARGIN) + (jmin - j) * _PITCH, ymax=_YHIGH + _MARGIN + (jmax - j) * _PITCH,
            background=background))
    return tuple(out)


def _program(path) -> str:
    try:
        return _str(fits.getheader(path).get("PROGRAM", ""))
    except (OSError, ValueError):
        return ""
