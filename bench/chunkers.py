#!/usr/bin/env python3
"""Throughput of the building blocks of a snapshot: chunkers, hashes and zstd, on this machine.

Run by hand (not part of CI):

    python bench/chunkers.py [--size-mib 1024] [--out DIR] [--json]

Candidates (each one is skipped with a note if its package is not installed):

* chunking, with the repository's ChunkerParams (min 64 KiB, avg 128 KiB, max 1 MiB): pyfastcdc (Cython) over
  a
buffer, over a file stream (the core's path) and over mmap; `fastcdc` 1.7 (PyPI, its own Cython backend);
  a pure-Python gear loop and pyfastcdc's pure-Python fallback on a small sample, extrapolated to the full
  size;
* hashing 1 GiB cut in chunk-sized pieces: BLAKE3, SHA-256, BLAKE2b, xxh3-128 and xxh64 (xxhash);
* chunk + hash in one pass, 1 and 2 threads (pyfastcdc and blake3 release the GIL; fastcdc does not);
* zstd (python-zstandard) level 1 and 3, per chunk, on CSV-like text and on random bytes, 1 and 2 threads;
  zlib level 1 (stdlib) for comparison.

Every figure is the best of `--repeat` runs (default 3) on data already in memory or in the page cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any

MiB = 1 << 20
RESULTS: list[dict[str, Any]] = []


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def record(group: str, name: str, nbytes: int, seconds: float, note: str = "", **extra: Any) -> None:
    gbps = nbytes / seconds / 1e9
    RESULTS.append(
        {"group": group, "name": name, "bytes": nbytes, "seconds": seconds, "gb_per_s": gbps, "note": note} | extra
    )
    print(f"  {name:52s} {gbps:7.3f} GB/s  ({nbytes / MiB:,.0f} MiB in {seconds:.3f} s) {note}", flush=True)


def load_loadavg() -> float:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return -1.0


def wait_idle(max_seconds: float, threshold: float = 0.6) -> float:
    """Wait until the 1-minute load average is below `threshold` (at most `max_seconds`); return it."""
    deadline = time.time() + max_seconds
    load = load_loadavg()
    while load >= threshold and time.time() < deadline:
        time.sleep(5)
        load = load_loadavg()
    return load


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
def random_bytes(n: int, seed: int = 1) -> bytes:
    try:
        import numpy as np

        return np.random.default_rng(seed).bytes(n)
    except ImportError:
        return os.urandom(n)


def csv_like(n: int) -> bytes:
    """Heart-monitoring CSV text: from the snapshot benchmark's dataset if it is there, else generated."""
    for candidate in (os.path.join(tempfile.gettempdir(), "dacflow-bench", "dataset", "data", "vitals.csv"),):
        if os.path.exists(candidate) and os.path.getsize(candidate) >= n:
            with open(candidate, "rb") as f:
                return f.read(n)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from snapshot_bench import _csv_bytes, _vitals_table

    parts, size, start = [], 0, 0
    while size < n:
        data = _csv_bytes(_vitals_table(start, 500_000, 42), header=start == 0)
        parts.append(data)
        size += len(data)
        start += 500_000
    return b"".join(parts)[:n]


def pieces(buf: bytes, size: int) -> list[memoryview]:
    mv = memoryview(buf)
    return [mv[i : i + size] for i in range(0, len(mv), size)]


# ----------------------------------------------------------------------------------------------------------
# Chunkers
# ----------------------------------------------------------------------------------------------------------
GEAR: list[int] = []


def pure_python_gear_cut(data: bytes, min_size: int, avg_size: int, max_size: int) -> list[int]:
    """A straightforward FastCDC gear loop (normalisation level 1) in pure Python: the cut offsets."""
    global GEAR
    if not GEAR:
        import random

        r = random.Random(0)
        GEAR = [r.getrandbits(64) for _ in range(256)]
    bits = avg_size.bit_length() - 1
    mask_s = (1 << (bits + 1)) - 1 << (64 - bits - 1)
    mask_l = (1 << (bits - 1)) - 1 << (64 - bits + 1)
    m64 = (1 << 64) - 1
    gear = GEAR
    cuts = []
    start, n = 0, len(data)
    while start < n:
        end = min(n, start + max_size)
        if end - start <= min_size:
            cuts.append(end)
            break
        h = 0
        i = start + min_size
        normal = min(end, start + avg_size)
        cut = end
        while i < normal:
            h = ((h << 1) + gear[data[i]]) & m64
            if not h & mask_s:
                cut = i + 1
                break
            i += 1
        else:
            while i < end:
                h = ((h << 1) + gear[data[i]]) & m64
                if not h & mask_l:
                    cut = i + 1
                    break
                i += 1
        cuts.append(cut)
        start = cut
    return cuts


def bench_chunkers(data: bytes, path: str, params: Any, repeat: int, sample_mib: int) -> None:
    n = len(data)
    print(
        f"\nchunking only (min {params.min_size // 1024} KiB, avg {params.avg_size // 1024} KiB, "
        f"max {params.max_size // 1024} KiB)"
    )

    def py_buf() -> int:
        return sum(1 for _ in params.new().cut_buf(data))

    t, count = best_of(repeat, py_buf)
    record("chunk", "pyfastcdc cut_buf (in memory)", n, t, f"{count} chunks, avg {n / count / 1024:.0f} KiB")

    def py_stream() -> int:
        with open(path, "rb", buffering=0) as f:
            return sum(1 for _ in params.new().cut_stream(f))

    t, _ = best_of(repeat, py_stream)
    record("chunk", "pyfastcdc cut_stream (file, page cache; core's path)", n, t)

    def py_mmap() -> int:
        return sum(1 for _ in params.new().cut_file(path))

    t, _ = best_of(repeat, py_mmap)
    record("chunk", "pyfastcdc cut_file (mmap, page cache)", n, t)

    try:
        from fastcdc import fastcdc as fastcdc_mod

        backend = fastcdc_mod.__name__ if hasattr(fastcdc_mod, "__name__") else str(fastcdc_mod)

        def fc() -> int:
            return sum(1 for _ in fastcdc_mod(data, params.min_size, params.avg_size, params.max_size, fat=False))

        t, count = best_of(repeat, fc)
        record(
            "chunk",
            "fastcdc 1.7 (fat=False, no copy)",
            n,
            t,
            f"backend {backend}; {count} chunks, avg {n / count / 1024:.0f} KiB",
        )

        def fc_fat() -> int:
            return sum(
                len(c.data) for c in fastcdc_mod(data, params.min_size, params.avg_size, params.max_size, fat=True)
            )

        t, _ = best_of(repeat, fc_fat)
        record("chunk", "fastcdc 1.7 (fat=True, copies each chunk)", n, t)
    except ImportError:
        print("  fastcdc not installed: skipped")

    sample = data[: sample_mib * MiB]
    t, cuts = best_of(1, lambda: pure_python_gear_cut(sample, params.min_size, params.avg_size, params.max_size))
    record(
        "chunk",
        f"pure-Python gear loop ({sample_mib} MiB sample)",
        len(sample),
        t,
        f"=> {n / (len(sample) / t) / 60:.1f} min for {n / MiB:,.0f} MiB",
    )
    try:
        from pyfastcdc.py import FastCDC as PyFastCDC

        slow = PyFastCDC(
            params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=params.normalization,
        )
        t, _ = best_of(1, lambda: sum(1 for _ in slow.cut_buf(sample)))
        record(
            "chunk",
            f"pyfastcdc pure-Python fallback ({sample_mib} MiB sample)",
            len(sample),
            t,
            f"=> {n / (len(sample) / t) / 60:.1f} min for {n / MiB:,.0f} MiB",
        )
    except ImportError:
        pass


# ----------------------------------------------------------------------------------------------------------
# Hashes
# ----------------------------------------------------------------------------------------------------------
def hash_candidates() -> list[tuple[str, Callable[[memoryview], Any]]]:
    out: list[tuple[str, Callable[[memoryview], Any]]] = []
    try:
        import blake3

        out.append(("blake3 (hexdigest)", lambda b: blake3.blake3(b).hexdigest()))
    except ImportError:
        print("  blake3 not installed: skipped")
    out.append(("sha256 (hashlib)", lambda b: hashlib.sha256(b).hexdigest()))
    out.append(("blake2b (hashlib)", lambda b: hashlib.blake2b(b).hexdigest()))
    try:
        import xxhash

        out.append(("xxh3_128 (xxhash, not cryptographic)", lambda b: xxhash.xxh3_128_hexdigest(b)))
        out.append(("xxh64 (xxhash, not cryptographic)", lambda b: xxhash.xxh64_hexdigest(b)))
    except ImportError:
        print("  xxhash not installed: skipped")
    return out


def bench_hashes(data: bytes, chunk: int, repeat: int) -> None:
    print(f"\nhashing, in {chunk // 1024} KiB pieces (the real average chunk), 1 thread")
    parts = pieces(data, chunk)
    for name, fn in hash_candidates():
        t, _ = best_of(repeat, partial(each, fn, parts))
        record("hash", name, len(data), t)
    try:
        import blake3

        t, _ = best_of(repeat, lambda: blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest())
        record("hash", "blake3 whole buffer, max_threads=AUTO", len(data), t, "(intra-hash threads)")
    except ImportError:
        pass


def each(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    return [fn(x) for x in items]


def zlib_size(parts: list[memoryview]) -> int:
    return sum(len(zlib.compress(p, 1)) for p in parts)


def threaded(nthreads: int, jobs: Iterable[Callable[[], Any]]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=nthreads) as pool:
        return list(pool.map(lambda j: j(), jobs))


def bench_chunk_hash(data: bytes, params: Any, repeat: int) -> None:
    import blake3

    print("\nchunk + hash in one pass")
    half = len(data) // 2
    halves = [memoryview(data)[:half], memoryview(data)[half:]]

    def py_one(buf: memoryview) -> int:
        n = 0
        for c in params.new().cut_buf(buf):
            blake3.blake3(c.data).hexdigest()
            n += 1
        return n

    t, _ = best_of(repeat, lambda: py_one(memoryview(data)))
    record("chunk+hash", "pyfastcdc + blake3, 1 thread", len(data), t)
    t, _ = best_of(repeat, partial(threaded, 2, [partial(py_one, b) for b in halves]))
    record("chunk+hash", "pyfastcdc + blake3, 2 threads (a half each)", len(data), t)
    try:
        from fastcdc import fastcdc as fastcdc_mod

        def fc_one(buf: memoryview) -> int:
            n = 0
            for c in fastcdc_mod(buf, params.min_size, params.avg_size, params.max_size, fat=False):
                blake3.blake3(buf[c.offset : c.offset + c.length]).hexdigest()
                n += 1
            return n

        t, _ = best_of(repeat, lambda: fc_one(memoryview(data)))
        record("chunk+hash", "fastcdc + blake3, 1 thread", len(data), t)
        t, _ = best_of(repeat, partial(threaded, 2, [partial(fc_one, b) for b in halves]))
        record("chunk+hash", "fastcdc + blake3, 2 threads (a half each)", len(data), t, "(fastcdc holds the GIL)")
    except ImportError:
        pass
    sha = [("pyfastcdc + sha256, 1 thread", lambda b: hashlib.sha256(b).hexdigest())]
    for name, h in sha:

        def one(buf: memoryview, h: Callable[[memoryview], Any] = h) -> int:
            return sum(1 for c in params.new().cut_buf(buf) if h(c.data))

        t, _ = best_of(repeat, lambda: one(memoryview(data)))
        record("chunk+hash", name, len(data), t)


# ----------------------------------------------------------------------------------------------------------
# zstd
# ----------------------------------------------------------------------------------------------------------
def bench_zstd(csv: bytes, rnd: bytes, chunk: int, repeat: int) -> None:
    try:
        import zstandard
    except ImportError:
        print("zstandard not installed: skipped")
        return
    print(f"\nzstd (python-zstandard {zstandard.__version__}), per {chunk // 1024} KiB chunk as the core stores them")
    for label, data in (("CSV-like", csv), ("random", rnd)):
        parts = pieces(data, chunk)
        halves = [parts[: len(parts) // 2], parts[len(parts) // 2 :]]

        def comp(ps: list[memoryview], level: int) -> int:
            c = zstandard.ZstdCompressor(level=level)
            return sum(len(c.compress(p)) for p in ps)

        for level in (1, 3, -1, -5):
            t, out = best_of(repeat, partial(comp, parts, level))
            record(
                "zstd",
                f"level {level} compress, {label}, 1 thread",
                len(data),
                t,
                f"ratio {len(data) / out:.2f} (stored {out / len(data):.1%})",
                level=level,
                data=label,
                threads=1,
                stored_fraction=out / len(data),
            )
            if level in (1, 3):
                t, _ = best_of(
                    repeat,
                    partial(threaded, 2, [partial(comp, h, level) for h in halves]),
                )
                record(
                    "zstd",
                    f"level {level} compress, {label}, 2 threads",
                    len(data),
                    t,
                    level=level,
                    data=label,
                    threads=2,
                )
        c1 = zstandard.ZstdCompressor(level=1)
        packed = [c1.compress(p) for p in parts]
        d = zstandard.ZstdDecompressor()
        t, _ = best_of(repeat, partial(each, d.decompress, packed))
        record("zstd", f"level 1 decompress, {label}, 1 thread", len(data), t, "(output bytes)")
        t, out = best_of(1, partial(zlib_size, parts))
        record(
            "zstd",
            f"zlib level 1 (stdlib, for comparison), {label}, 1 thread",
            len(data),
            t,
            f"ratio {len(data) / out:.2f} (stored {out / len(data):.1%})",
        )
        probe = [p[:4096] for p in parts]
        t, _ = best_of(repeat, partial(each, c1.compress, probe))
        record(
            "zstd",
            f"4 KiB probe per chunk (level 1), {label}",
            len(data),
            t,
            "(testing compressibility first; per full-chunk byte)",
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="data for chunkers and hashes (default 1024)")
    ap.add_argument("--zstd-mib", type=int, default=256, help="data for each zstd case (default 256)")
    ap.add_argument("--sample-mib", type=int, default=4, help="sample for the pure-Python chunkers (default 4)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the 1-minute load average to drop below 0.6",
    )
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "dacflow-bench"))
    args = ap.parse_args()

    import blake3
    import pyfastcdc
    from dacflow.chunking import ChunkerParams

    params = ChunkerParams()
    load0 = wait_idle(args.wait_idle) if args.wait_idle else load_loadavg()
    print(
        f"{os.cpu_count()} cpus, Python {platform.python_version()}, load average {load0:.2f}; "
        f"pyfastcdc {pyfastcdc.__version__}, blake3 {blake3.__version__}"
    )
    n = args.size_mib * MiB
    data = random_bytes(n)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "chunkers-random.bin")
    with open(path, "wb") as f:
        f.write(data)
    with open(path, "rb") as f:  # into the page cache
        while f.read(64 * MiB):
            pass
    real_chunk = params.avg_size + params.min_size  # pyfastcdc's real average (see FACTS / ChunkerParams)
    t0 = time.perf_counter()
    bench_chunkers(data, path, params, args.repeat, args.sample_mib)
    bench_hashes(data, real_chunk, args.repeat)
    bench_chunk_hash(data, params, args.repeat)
    csv = csv_like(args.zstd_mib * MiB)
    bench_zstd(csv, data[: args.zstd_mib * MiB], real_chunk, args.repeat)
    os.unlink(path)
    doc = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_before": load0,
        "load_after": load_loadavg(),
        "seconds": time.perf_counter() - t0,
        "chunker": params.to_json(),
        "results": RESULTS,
    }
    out = os.path.join(args.out, "chunkers.json")
    with open(out, "w") as f:
        json.dump(doc, f, indent=2)
    print(f"\nload average after: {doc['load_after']:.2f}; results written to {out}")


if __name__ == "__main__":
    main()
