"""nirbeam: JWST NIRSpec exposures to science products on Apache Beam."""

__version__ = "0.1.0"

__all__ = ["__version__"]
