"""nirbeam: JWST NIRSpec exposures to science products on Apache Beam."""

__version__ = "0.1.0"

__all__ = ["__version__", "open_products"]


def __getattr__(name: str):
    # lazy: ``import nirbeam`` stays light (no xarray/zarr) for Beam workers
    if name == "open_products":
        from nirbeam.api import open_products

        return open_products
    raise AttributeError(f"module 'nirbeam' has no attribute {name!r}")
