"""The NIRSpec BOTS simulator (tests, demo, benchmarks); no production module imports it."""
