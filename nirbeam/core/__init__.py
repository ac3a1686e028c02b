"""nirbeam's core: types and schemas as data, imported by every layer, importing none.

* :mod:`nirbeam.core.schema` -- the store layout: stage names, arrays, dtypes, dims,
  attributes, group paths.
* :mod:`nirbeam.core.geometry` -- :class:`SpectralRegion` and :class:`ModePlan`: where on
  the detector a mode's spectra are, and how a mode finds them.

Nothing here imports Beam, zarr, astropy or another nirbeam package (an import-linter
contract in pyproject.toml fails the test suite otherwise).
"""
