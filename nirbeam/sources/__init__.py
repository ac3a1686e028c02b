"""Readers of inputs other than uncal ramps: jwst level-2 slit files, MSA metadata files.
Same layer as :mod:`nirbeam.stream.uncal`; they build core records, never import a
pipeline."""
