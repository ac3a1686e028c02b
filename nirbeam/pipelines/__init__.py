"""Batch pipelines of the ensemble modes (FS, MOS, IFU): each composes the shared kernels
(:mod:`nirbeam.transforms`), readers (:mod:`nirbeam.sources`, :mod:`nirbeam.stream.uncal`)
and writers (:mod:`nirbeam.sinks`) for the regions a mode plan (:mod:`nirbeam.modes`) finds.
Same layer as :mod:`nirbeam.stream.pipeline`."""
