"""`pyml info | bench | verify | warmup`."""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__, _cpu
from ._backend import BACKENDS, BackendUnavailableError, backends, get_num_threads, set_num_threads

# hot loop -> its API module (each defines ``_verify(backend, rng)``)
LOOPS = ("kmeans", "conv", "attention", "mf", "mdp")


def _loop_module(loop: str):
    try:
        return importlib.import_module(f"pyml.{loop}")
    except ImportError:
        return None


def cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    print(f"pyml {__version__}  (numpy {np.__version__}, python {sys.version.split()[0]})")
    print(f"threads: {get_num_threads()}")
    try:
        cpu = _cpu.summary()
        print(f"cpu SIMD: {' '.join(cpu['features']) or 'none reported'}; "
              f"runs variants: {', '.join(cpu['runnable'])}; "
              f"OpenMP {importlib.import_module(_cpu.PROBE).openmp_version()}")
        forced = f" (forced by PYML_CPU={cpu['forced']})" if cpu["forced"] else ""
        for ext, chosen in cpu["variants"].items():
            print(f"  {ext:7s} kernels: {chosen}{forced}")
    except ImportError:
        print("cpu SIMD: unknown (pyml._cpp not built)")
    print("backends:")
    for name, reason in backends().items():
        print(f"  {name:7s} {'available' if reason is None else 'unavailable: ' + reason}")
    if backends()["cuda"] is None:
        import cupy as cp

        dev = cp.cuda.Device()
        props = cp.cuda.runtime.getDeviceProperties(dev.id)
        free, total = dev.mem_info
        print(f"gpu: {props['name'].decode()}  {total / 2**30:.1f} GiB ({free / 2**30:.1f} free), "
              f"compute capability {dev.compute_capability}")
    else:
        print("gpu: none")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .benchmarks import SUITES, _harness

    if args.threads:
        set_num_threads(args.threads)
    names = list(SUITES) if args.kernel == "all" else [args.kernel]
    cases = []
    for name in names:
        try:
            mod = importlib.import_module(f"pyml.benchmarks.bench_{SUITES[name]}")
        except ImportError as exc:
            print(f"{name}: no benchmark suite ({exc})", file=sys.stderr)
            return 2
        cases += mod.suite(size=args.size, backends=args.backends, peers=args.peers)
    rows, roof = _harness.run(cases, repeat=args.repeat, progress=not args.quiet)
    print(_harness.format_table(rows, roof))
    if args.json:
        _harness.write_json(rows, roof, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        _harness.plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _verify_rows(backend_list, quiet=False):
    import numpy as np

    rows = []
    for loop in LOOPS:
        mod = _loop_module(loop)
        if mod is None or not hasattr(mod, "_verify"):
            continue
        for b in backend_list:
            try:
                checks = mod._verify(b, np.random.default_rng(0))
            except BackendUnavailableError as exc:
                rows.append((loop, b, "-", None, None, f"skipped: {exc}"))
                continue
            for name, err, tol in checks:
                rows.append((loop, b, name, err, tol, "pass" if err <= tol else "FAIL"))
    return rows


def cmd_verify(args: argparse.Namespace) -> int:
    avail = [b for b, r in backends().items() if r is None]
    chosen = args.backends or avail
    rows = _verify_rows(chosen)
    failed = 0
    print(f"{'loop':10s} {'backend':8s} {'check':34s} {'max error':>11s} {'tolerance':>11s}  result")
    for loop, b, name, err, tol, res in rows:
        e = "-" if err is None else f"{err:.3g}"
        t = "-" if tol is None else f"{tol:.3g}"
        if res.startswith("skipped"):
            res = "skipped (no kernel)" if "has no" in res else res
        print(f"{loop:10s} {b:8s} {name:34s} {e:>11s} {t:>11s}  {res}")
        failed += res == "FAIL"
    print(f"{sum(r[5] == 'pass' for r in rows)} passed, {failed} failed")
    return 1 if failed else 0


def cmd_warmup(args: argparse.Namespace) -> int:
    import time

    t0 = time.perf_counter()
    rows = _verify_rows(["numba"])
    n = sum(r[5] == "pass" for r in rows)
    print(f"compiled and cached {n} numba kernel checks in {time.perf_counter() - t0:.1f} s")
    return 0 if all(r[5] != "FAIL" for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    from .benchmarks import SUITES

    p = argparse.ArgumentParser(prog="pyml", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, backends (and why unavailable), SIMD, threads, GPU")
    b = sub.add_parser("bench", help="time pyml backends against peers on one problem")
    b.add_argument("kernel", choices=list(SUITES) + ["all"])
    b.add_argument("--backends", nargs="+", choices=BACKENDS, help="pyml backends (default: available compiled ones)")
    b.add_argument("--peers", nargs="*", help="peer libraries (default: every installed one; none: --peers)")
    b.add_argument("--size", default="default", help="problem size preset (default, small, large)")
    b.add_argument("--repeat", type=int, default=5, help="timed repeats; the median is reported")
    b.add_argument("--threads", type=int, help="threads for pyml, BLAS and peers")
    b.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    b.add_argument("--plot", metavar="FILE.png", help="write a bar chart")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    v = sub.add_parser("verify", help="every available backend against the reference")
    v.add_argument("--backends", nargs="+", choices=BACKENDS)
    sub.add_parser("warmup", help="compile and cache every Numba kernel")
    args = p.parse_args(argv)
    return {"info": cmd_info, "bench": cmd_bench, "verify": cmd_verify, "warmup": cmd_warmup}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
