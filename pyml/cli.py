"""`pyml info | bench | verify | warmup`."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time

import numpy as np

from . import __version__, _cpu
from ._backend import (BACKENDS, LOOPS, BackendUnavailableError, backends, get_num_threads,
                       max_threads, set_num_threads)
from ._threads import numba_layer
from ._verify import loop_checks
from .benchmarks import ALIASES, PEER_HINT, PEERS, SIZES, SUITES


def _has_checks(loop: str) -> bool:
    """Whether pyml/_verify/<loop>.py exists (the explicit registry is LOOPS; a loop without
    its module yet is reported as "no checks yet" -- any error inside one propagates)."""
    return importlib.util.find_spec(f"pyml._verify.{loop}") is not None


def cmd_info(args: argparse.Namespace) -> int:
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
    report = backends()
    if report["numba"] is None:
        layer = numba_layer()
        print(f"numba threading layer: {layer}" + (
            " (safe from several threads)" if layer in ("tbb", "omp") else
            " (not thread-safe: pyml serialises calls to numba kernels from several threads)"))
    print("backends:")
    for name, why in report.items():
        print(f"  {name:7s} {'available' if why is None else repr(why)}")
    if report["cuda"] is None:
        import cupy as cp

        dev = cp.cuda.Device()
        props = cp.cuda.runtime.getDeviceProperties(dev.id)
        free, total = dev.mem_info
        print(f"gpu: {props['name'].decode()}  {total / 2**30:.1f} GiB ({free / 2**30:.1f} free), "
              f"compute capability {dev.compute_capability}")
    else:
        print("gpu: none")
    return 0


def _suite_names(kernel: str) -> list[str]:
    if kernel == "all":
        return list(LOOPS)
    return [ALIASES.get(kernel, kernel)]


def _check_peers(parser: argparse.ArgumentParser, names: list[str], peers: list[str] | None):
    """None (every installed peer) or the requested names, refusing unknown ones."""
    valid = {p: mod for n in names for p, mod in PEERS[n].items()}
    if peers is None:
        if valid and not any(importlib.util.find_spec(m) for m in valid.values()):
            print(PEER_HINT, file=sys.stderr)
        return None
    unknown = [p for p in peers if p not in valid]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)} for {' '.join(names)}; "
                     f"valid peers: {', '.join(valid) or 'none'}")
    missing = [p for p in peers if importlib.util.find_spec(valid[p]) is None]
    if missing:
        print(f"peer(s) not installed, skipped: {', '.join(missing)}; "
              'install them with  pip install "pyml[bench]"', file=sys.stderr)
    return peers


def cmd_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .benchmarks import _harness, _report

    names = _suite_names(args.kernel)
    peers = _check_peers(parser, names, args.peers)
    if args.threads:
        set_num_threads(args.threads)
    cases = []
    for name in names:
        mod = importlib.import_module(f"pyml.benchmarks.bench_{SUITES[name]}")
        try:
            cases += mod.suite(size=args.size, backends=args.backends, peers=peers)
        except ValueError as exc:
            if "size" not in str(exc):
                raise
            parser.error(f"{name}: {exc}")  # a size this loop's suite does not provide
    rows, roof = _harness.run(cases, repeat=args.repeat, progress=not args.quiet,
                              under_load=args.under_load)
    print(_report.format_table(rows, roof))
    if args.json:
        _report.write_json(rows, roof, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        _report.plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _loop_name(name: str) -> str:
    """A loop name or an old spelling of one (argparse type: errors become usage errors)."""
    loop = ALIASES.get(name, name)
    if loop not in LOOPS:
        raise argparse.ArgumentTypeError(
            f"invalid loop {name!r} (choose from {', '.join(LOOPS + tuple(ALIASES))})")
    return loop


def _loops(requested: list[str] | None) -> list[str]:
    return list(dict.fromkeys(requested)) if requested else list(LOOPS)


def _check_rows(loop: str, backend: str):
    """``(check, error, tolerance, result, seconds)`` as each check of ``loop`` finishes.

    A loop's ``checks`` may return a list or yield its rows one by one (then each line
    appears as its check finishes, and seconds is that check's own time)."""
    t0 = time.perf_counter()
    try:
        rows = iter(loop_checks(loop)(backend, np.random.default_rng(0)))
        while True:
            try:
                name, err, tol = next(rows)
            except StopIteration:
                return
            yield name, err, tol, "pass" if err <= tol else "FAIL", time.perf_counter() - t0
            t0 = time.perf_counter()
    except BackendUnavailableError as exc:
        yield "-", None, None, "skipped (no kernel)" if "has no" in str(exc) else f"skipped: {exc}", \
            time.perf_counter() - t0


def _print_checks(loops: list[str], backend_list: list[str], out=None) -> tuple[int, int]:
    """Run the checks, one line per check as it finishes; returns (passed, failed)."""
    out = out or sys.stdout  # looked up per call (pytest's capsys replaces it)
    passed = failed = 0
    print(f"{'loop':10s} {'backend':8s} {'check':40s} {'max error':>11s} {'tolerance':>11s}"
          f" {'seconds':>8s}  result", file=out, flush=True)
    for loop in loops:
        if not _has_checks(loop):
            print(f"{loop:10s} {'-':8s} {'-':40s} {'-':>11s} {'-':>11s} {'-':>8s}  no checks yet",
                  file=out, flush=True)
            continue
        for b in backend_list:
            for name, err, tol, res, dt in _check_rows(loop, b):
                e = "-" if err is None else f"{err:.3g}"
                t = "-" if tol is None else f"{tol:.3g}"
                print(f"{loop:10s} {b:8s} {name:40s} {e:>11s} {t:>11s} {dt:8.2f}  {res}",
                      file=out, flush=True)
                passed += res == "pass"
                failed += res == "FAIL"
    return passed, failed


def cmd_verify(args: argparse.Namespace) -> int:
    chosen = args.backends or backends().available()
    passed, failed = _print_checks(_loops(args.loops), chosen)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_warmup(args: argparse.Namespace) -> int:
    """Compile and cache the numba kernels of every public call (pyml._warmup), one line per
    call as it finishes; later processes load them from Numba's cache instead of compiling."""
    if backends()["numba"] is not None:
        print(f"nothing to warm up: {backends()['numba']}")
        return 0
    from . import _warmup

    out = sys.stdout  # looked up per call (pytest's capsys replaces it)
    workers = args.jobs or max_threads()
    t0 = time.perf_counter()
    print(f"{'loop':10s} {'call':34s} {'dtype':8s} {'seconds':>8s}  result", file=out, flush=True)
    loops = _loops(args.loops)
    calls = failed = 0
    for loop, what, dtype, seconds, result in _warmup.run(loops, workers, args.dtype, args.all):
        print(f"{loop:10s} {what:34s} {dtype:8s} {seconds:8.2f}  {result}", file=out, flush=True)
        calls += 1
        failed += result.startswith("FAIL")
    print(f"compiled and cached the numba kernels of {calls} calls in "
          f"{time.perf_counter() - t0:.1f} s ({max(1, min(workers, len(_warmup.jobs(loops))))} "
          "processes)", file=out)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyml", description=__doc__)
    p.add_argument("--version", action="version", version=f"pyml {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, backends (and why unavailable), SIMD, threads, GPU")
    b = sub.add_parser("bench", help="time pyml backends against peers on one problem",
                       epilog=f"old names: {', '.join(f'{k} = {v}' for k, v in ALIASES.items())}. "
                       'Peers come with  pip install "pyml[bench]".')
    b.add_argument("kernel", choices=list(SUITES) + list(ALIASES) + ["all"],
                   help="hot loop to time, 'startup' (import and first-call times) or 'all'")
    b.add_argument("--backends", nargs="+", choices=BACKENDS, help="pyml backends (default: available compiled ones)")
    valid = sorted({p for v in PEERS.values() for p in v})
    b.add_argument("--peers", nargs="*", metavar="PEER",
                   help=f"peer libraries ({', '.join(valid)}; default: every installed one; "
                        "none: --peers with no name)")
    b.add_argument("--size", default="default", choices=SIZES, help="problem size preset")
    b.add_argument("--repeat", type=int, default=5, help="timed repeats; the median is reported")
    b.add_argument("--threads", type=int, help="threads for pyml, BLAS and peers")
    b.add_argument("--under-load", action="store_true",
                   help="time each row again beside a CPU-burning process; report loaded/quiet")
    b.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    b.add_argument("--plot", metavar="FILE.png", help="write a bar chart")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(parser=b)  # so that bench's errors read "pyml bench: error: ..."
    v = sub.add_parser("verify", help="every available backend against the reference")
    v.add_argument("loops", nargs="*", type=_loop_name, metavar="LOOP",
                   help=f"hot loops to verify ({', '.join(LOOPS)}; default: all)")
    v.add_argument("--backends", nargs="+", choices=BACKENDS)
    w = sub.add_parser("warmup", help="compile and cache every Numba kernel")
    w.add_argument("loops", nargs="*", type=_loop_name, metavar="LOOP",
                   help=f"hot loops to warm up ({', '.join(LOOPS)}; default: all)")
    w.add_argument("--jobs", "-j", type=int, metavar="N",
                   help="worker processes compiling at once (default: one per CPU)")
    w.add_argument("--dtype", nargs="+", choices=["float32", "float64"],
                   help="dtypes to compile (default: each loop's default, float64 for array "
                        "inputs, float32 for ALS and mf_sgd)")
    w.add_argument("--all", action="store_true",
                   help="also the non-default options (k-medians, ALS loss, 64-bit CSR indices), "
                        "in float32 and float64")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        if args.kernel == "startup" and args.under_load:
            args.parser.error("--under-load does not apply to the startup suite")
        return cmd_bench(args, args.parser)
    return {"info": cmd_info, "verify": cmd_verify, "warmup": cmd_warmup}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
