"""Codec choice for the zarr cubes, measured on real-like data (simulated exposures run
through nirbeam).

For each preset (prism-sub512, g395h-sub2048) the bench simulates a small exposure, runs
``nirbeam run`` on it, and rewrites each cube array (rateints sci/err/dq/var_poisson/
var_rnoise, spectra flux/flux_error/dq) into fresh zarr v3 stores with the pipeline's
chunking (one integration per chunk) and each candidate codec, the way the pipeline writes
them (one integration region per call), then reads them back (whole cube, and one
integration at a time). It reports stored bytes per integration, compression ratio, and
write / read throughput in MB/s of uncompressed data, with ratios against the
uncompressed store measured in the same run.

Usage::

    .venv/bin/python bench/zarr_codecs.py [--nints-prism 32] [--nints-g395h 8]
        [--repeat 3] [--from PRESET=OUTDIR ...] [--out bench/results/zarr_codecs.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _provenance import provenance, write_result  # noqa: E402  (bench/ is sys.path[0])

from nirbeam.sinks import zarr_store  # noqa: E402

SPECS: dict[str, tuple[str, dict]] = {"none": ("none", {})}
for _lvl in (1, 3, 5):
    SPECS[f"zstd-{_lvl}"] = ("zstd", {"level": _lvl})
for _lvl in (1, 3, 5, 7):
    SPECS[f"blosc-zstd-{_lvl}-shuffle"] = ("blosc", {"cname": "zstd", "clevel": _lvl, "shuffle": "shuffle"})
for _lvl in (3, 5):
    SPECS[f"blosc-zstd-{_lvl}-bitshuffle"] = ("blosc", {"cname": "zstd", "clevel": _lvl, "shuffle": "bitshuffle"})
SPECS["blosc-lz4-5-shuffle"] = ("blosc", {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"})


def codecs(dtype) -> dict[str, list]:
    """Candidate compressor chains (zarr v3 bytes->bytes codecs)."""
    ts = np.dtype(dtype).itemsize
    out: dict[str, list] = {}
    for name, (kind, kw) in SPECS.items():
        if kind == "none":
            out[name] = []
        elif kind == "zstd":
            out[name] = [ZstdCodec(**kw)]
        else:
            out[name] = [BloscCodec(typesize=ts, **kw)]
    return out


def numcodec(name: str):
    """The numcodecs codec doing the same work (for in-memory encode/decode timing)."""
    import numcodecs

    kind, kw = SPECS[name]
    if kind == "none":
        return None
    if kind == "zstd":
        return numcodecs.Zstd(**kw)
    sh = {"shuffle": numcodecs.Blosc.SHUFFLE, "bitshuffle": numcodecs.Blosc.BITSHUFFLE}[kw["shuffle"]]
    return numcodecs.Blosc(cname=kw["cname"], clevel=kw["clevel"], shuffle=sh)


def codec_speed(cube: np.ndarray, name: str, repeat: int) -> dict:
    """Encode/decode every integration frame in memory: the codec's CPU cost, no store I/O."""
    c = numcodec(name)
    if c is None:
        return {}
    frames = [np.ascontiguousarray(f) for f in cube]
    enc, dec = [], []
    for _ in range(max(repeat, 3)):
        t0 = time.perf_counter()
        blobs = [c.encode(f) for f in frames]
        enc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for b in blobs:
            c.decode(b)
        dec.append(time.perf_counter() - t0)
    mb = cube.nbytes / 1e6
    return {"encode_MBps": round(mb / min(enc), 1), "decode_MBps": round(mb / min(dec), 1)}


def _dir_bytes(path: str) -> int:
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            if f != "zarr.json":
                total += os.path.getsize(os.path.join(d, f))
    return total


def measure(cube: np.ndarray, chain: list, workdir: str, repeat: int) -> dict:
    """Write (per integration) and read (whole and per integration) one cube with one codec."""
    nints = cube.shape[0]
    raw = cube.nbytes
    writes, reads, reads1 = [], [], []
    size = 0
    for r in range(repeat):
        path = os.path.join(workdir, f"s{r}.zarr")
        g = zarr.open_group(path, mode="w", zarr_format=3)
        a = g.create_array("a", shape=cube.shape, dtype=cube.dtype, chunks=(1, *cube.shape[1:]),
                           compressors=chain, fill_value=0,
                           dimension_names=("integration",) + tuple(f"d{k}" for k in range(cube.ndim - 1)))
        a = zarr.open_array(path, path="a", mode="r+", zarr_format=3)
        t0 = time.perf_counter()
        for i in range(nints):
            a[i] = cube[i]
        writes.append(time.perf_counter() - t0)
        size = _dir_bytes(os.path.join(path, "a"))
        b = zarr.open_array(path, path="a", mode="r", zarr_format=3)
        t0 = time.perf_counter()
        back = b[:]
        reads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(nints):
            b[i]
        reads1.append(time.perf_counter() - t0)
        if not np.array_equal(back, cube, equal_nan=cube.dtype.kind == "f"):
            raise AssertionError(f"codec {chain} did not round-trip")
        shutil.rmtree(path)
    mb = raw / 1e6
    return {
        "bytes_per_integration": round(size / nints, 1),
        "ratio": round(raw / max(size, 1), 3),
        "write_MBps": round(mb / min(writes), 1),
        "read_MBps": round(mb / min(reads), 1),
        "read_one_integration_MBps": round(mb / min(reads1), 1),
    }


def run_preset(preset: str, nints: int, workdir: str, outdir: str | None) -> str:
    """Simulate and process an exposure (or reuse OUTDIR); return its cube store path."""
    if outdir is None:
        from nirbeam.sim.simulator import simulate
        from nirbeam.stream.cli import main

        sim = simulate(os.path.join(workdir, f"sim-{preset}"), preset=preset, nints=nints, seed=7)
        outdir = os.path.join(workdir, f"out-{preset}")
        rc = main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", outdir, "--no-progress"])
        if rc != 0:
            raise SystemExit(f"nirbeam run failed for {preset} (exit {rc})")
    return os.path.join(outdir, "cubes.zarr")


ARRAYS = [("rateints", n) for n in ("sci", "err", "dq", "var_poisson", "var_rnoise")] + [
    ("spectra", n) for n in ("flux", "flux_error", "dq")
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nints-prism", type=int, default=32)
    ap.add_argument("--nints-g395h", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--from", dest="reuse", action="append", default=[],
                    help="PRESET=OUTDIR: reuse a finished run instead of simulating")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "zarr_codecs.json"))
    args = ap.parse_args(argv)
    prov = provenance(argv)
    reuse = dict(x.split("=", 1) for x in args.reuse)
    warnings.simplefilter("ignore")
    results: dict = {
        "what": "zarr v3 cube codecs: bytes per integration, ratio, write/read MB/s (uncompressed MB)",
        "chunks": "one integration per chunk (1, ny, nx) / (1, nx); writes one region per call",
        "machine": {"python": platform.python_version(), "zarr": zarr.__version__,
                    "cpus": os.cpu_count(), "platform": platform.platform()},
        "default_in_store": repr(zarr_store.CUBE_CODEC(np.float32)),
        "presets": {},
    }
    with tempfile.TemporaryDirectory(prefix="zarr-codecs-") as work:
        for preset, nints in (("prism-sub512", args.nints_prism), ("g395h-sub2048", args.nints_g395h)):
            store = run_preset(preset, nints, work, reuse.get(preset))
            root = zarr.open_group(store, mode="r")
            (group,) = [n for n, _ in root.groups()][:1]
            pres: dict = {"group": group, "arrays": {}}
            for stage, name in ARRAYS:
                g = root[group]
                if stage not in g or name not in g[stage]:
                    continue
                cube = g[stage][name][:]
                done = g[stage]["done"][:] == 1
                cube = np.ascontiguousarray(cube[done])
                entry = {"shape": list(cube.shape), "dtype": str(cube.dtype),
                         "raw_bytes_per_integration": cube[0].nbytes, "codecs": {}}
                for cname, chain in codecs(cube.dtype).items():
                    entry["codecs"][cname] = measure(cube, chain, work, args.repeat)
                    entry["codecs"][cname].update(codec_speed(cube, cname, args.repeat))
                ref = entry["codecs"]["none"]
                for m in entry["codecs"].values():
                    m["write_vs_none"] = round(m["write_MBps"] / ref["write_MBps"], 3)
                    m["read_vs_none"] = round(m["read_MBps"] / ref["read_MBps"], 3)
                pres["arrays"][f"{stage}/{name}"] = entry
                best = min(entry["codecs"].items(), key=lambda kv: kv[1]["bytes_per_integration"])
                print(f"{preset:14s} {stage}/{name:12s} {cube.shape}: smallest {best[0]} "
                      f"x{best[1]['ratio']}", flush=True)
            # totals per integration over all cube arrays, per codec
            names = list(next(iter(pres["arrays"].values()))["codecs"])
            tot = {}
            for c in names:
                b = sum(e["codecs"][c]["bytes_per_integration"] for e in pres["arrays"].values())
                raw = sum(e["raw_bytes_per_integration"] for e in pres["arrays"].values())
                # throughput over the whole set: total MB / total seconds
                tw = sum(e["raw_bytes_per_integration"] * e["shape"][0] / 1e6 / e["codecs"][c]["write_MBps"]
                         for e in pres["arrays"].values())
                tr = sum(e["raw_bytes_per_integration"] * e["shape"][0] / 1e6 / e["codecs"][c]["read_MBps"]
                         for e in pres["arrays"].values())
                mb = sum(e["raw_bytes_per_integration"] * e["shape"][0] / 1e6 for e in pres["arrays"].values())
                tot[c] = {"bytes_per_integration": round(b), "ratio": round(raw / b, 3),
                          "write_MBps": round(mb / tw, 1), "read_MBps": round(mb / tr, 1)}
                if c != "none":
                    te = sum(e["raw_bytes_per_integration"] * e["shape"][0] / 1e6 / e["codecs"][c]["encode_MBps"]
                             for e in pres["arrays"].values())
                    td = sum(e["raw_bytes_per_integration"] * e["shape"][0] / 1e6 / e["codecs"][c]["decode_MBps"]
                             for e in pres["arrays"].values())
                    tot[c].update({"encode_MBps": round(mb / te, 1), "decode_MBps": round(mb / td, 1)})
            pres["total_per_integration"] = tot
            results["presets"][preset] = pres
            for c, t in sorted(tot.items(), key=lambda kv: kv[1]["bytes_per_integration"]):
                print(f"  {preset} all arrays {c:28s} {t['bytes_per_integration']:>9d} B/int "
                      f"x{t['ratio']:<6} write {t['write_MBps']:>7} MB/s read {t['read_MBps']:>7} MB/s "
                      f"encode {t.get('encode_MBps', '-'):>7} decode {t.get('decode_MBps', '-'):>7}")
    cfg = zarr_store.CUBE_CODEC(np.float32).to_dict()["configuration"]
    default = f"blosc-{cfg['cname']}-{cfg['clevel']}-{cfg['shuffle']}"
    results["default"] = default
    results["decision"] = {}
    for preset, pres in results["presets"].items():
        tot = pres["total_per_integration"]
        d = tot.get(default)
        if d is None:
            continue
        smallest = min((k for k in tot if k != "none"), key=lambda k: tot[k]["bytes_per_integration"])
        results["decision"][preset] = {
            "default_bytes_per_integration": d["bytes_per_integration"],
            "size_vs_smallest": round(d["bytes_per_integration"] / tot[smallest]["bytes_per_integration"], 3),
            "smallest": smallest,
            "size_vs_zstd-3": round(d["bytes_per_integration"] / tot["zstd-3"]["bytes_per_integration"], 3),
            "encode_vs_blosc-zstd-5-shuffle": round(d["encode_MBps"] / tot["blosc-zstd-5-shuffle"]["encode_MBps"], 2),
            "size_vs_blosc-zstd-5-shuffle": round(
                d["bytes_per_integration"] / tot["blosc-zstd-5-shuffle"]["bytes_per_integration"], 3),
        }
    print(json.dumps(results["decision"], indent=1))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_result(args.out, results, argv, start=prov, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
