"""SimVQ search benchmark: time, GFLOP/s and peak extra memory against references run alongside.

For every codebook size K, in one process each (so peak memory is per configuration):
  * SimVQ forward+backward on 16 x 1024 tokens, d = 64 (the step a tokenizer takes);
  * the reference: a plain chunked float32 GEMM of the same shape (tokens x codes, tiles of
    2048 x 1024 that stay in cache), no argmin;
  * the search alone with each exact method ("fp32", "screened");
  * eval-mode forward (cached codebook) vs train-mode forward, at the benchmark batch and at a
    small inference batch (256 tokens) where recomputing W(C) matters;
  * vector-quantize-pytorch's SimVQ on the same input when that package is installed;
  * with ``--baseline REV``: the search of another revision (its ``src/simvq/search.py``) on the
    same tokens and codebook, each method, the two timed in alternation (a change's cost measured
    in one run, where a busy machine's drift hits both alike).
Ratios (< 1 is faster than the reference) are what to read: absolute times drift with the machine.
A square 2048^3 sgemm measured in the same run gives the machine's attainable FLOP/s.

    python benchmarks/search.py                       # K in 1024 8192 65536 262144, + 1M memory run
    python benchmarks/search.py --sizes 65536 --repeats 5
    python benchmarks/search.py --sizes 8192 65536 --search-only --baseline HEAD~1 --repeats 3
    python benchmarks/search.py --write-docs          # also update the table in docs/results.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENS, DIM = 16 * 1024, 64
DOCS_BEGIN = "<!-- search-benchmark:begin -->"
DOCS_END = "<!-- search-benchmark:end -->"


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def chunked_gemm(x, codebook, token_chunk=2048, code_chunk=1024):
    import torch

    tile = torch.empty(token_chunk, code_chunk)
    codebook_t = codebook.t()
    for start in range(0, x.shape[0], token_chunk):
        for code_start in range(0, codebook.shape[0], code_chunk):
            torch.mm(x[start : start + token_chunk], codebook_t[:, code_start : code_start + code_chunk], out=tile)


def square_sgemm_gflops(repeats: int) -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    seconds = timed(lambda: a @ b, repeats)
    return 2 * 2048**3 / seconds / 1e9


def run_one(codebook_size: int, repeats: int, memory_only: bool, search_only: bool = False, baseline: str | None = None) -> dict:
    """Measurements for one K; runs in its own process (see main). The first step goes first and
    the peer last: peak RSS is the process's maximum so far, so the order is the measurement."""
    import torch

    from simvq import SimVQ

    torch.manual_seed(0)
    quantizer = SimVQ(DIM, codebook_size, seed=0)
    z = torch.randn(16, 1024, DIM, requires_grad=True)
    with torch.no_grad():
        codebook = quantizer.codebook().detach().clone()
    tokens = z.detach().reshape(-1, DIM)
    if search_only:
        result = {"codebook_size": codebook_size}
        if baseline:
            result.update(measure_against_baseline(tokens, codebook, repeats, baseline))
        return result

    def step():
        out = quantizer(z)
        (out.quantized.square().mean() + out.loss).backward()

    result = {"codebook_size": codebook_size, **measure_first_step(step)}
    if memory_only:
        return result
    result.update(measure_step_and_search(step, tokens, codebook, repeats))
    if baseline:
        result.update(measure_against_baseline(tokens, codebook, repeats, baseline))
    result.update(measure_eval_cache(quantizer, z, repeats))
    result.update(measure_peer(z, codebook_size, result["gemm_s"], repeats))
    return result


def measure_first_step(step) -> dict:
    """Time and peak extra memory of the very first training step (allocations included)."""
    baseline = rss_bytes()
    start = time.perf_counter()
    step()
    return {"first_step_s": time.perf_counter() - start, "peak_extra_mib": (peak_rss_bytes() - baseline) / 2**20}


def measure_step_and_search(step, x, codebook, repeats: int) -> dict:
    """The step and each exact search method against a plain chunked GEMM of the same shape."""
    from simvq import nearest

    flops = 2 * TOKENS * codebook.shape[0] * DIM
    result = {"step_s": timed(step, repeats), "gemm_s": timed(lambda: chunked_gemm(x, codebook), repeats)}
    for method in ("fp32", "screened"):
        result[f"search_{method}_s"] = timed(lambda method=method: nearest(x, codebook, method=method), repeats)
    result["ratio_step_to_gemm"] = result["step_s"] / result["gemm_s"]
    result["step_gflops"] = flops / result["step_s"] / 1e9
    result["gemm_gflops"] = flops / result["gemm_s"] / 1e9
    return result


def load_search_module(path: str):
    """Another revision's ``search.py`` as a module of its own, inside the ``simvq`` package so its
    relative imports (``simvq.cpu``) resolve, to this revision's modules."""
    import simvq

    spec = importlib.util.spec_from_file_location(f"{simvq.__name__}.baseline_search", path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = simvq.__name__
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def measure_against_baseline(x, codebook, repeats: int, baseline_path: str) -> dict:
    """Each method of this revision's search and of the baseline's on the same data, timed in
    alternation (each going first in turn), best of ``repeats`` each, in wall-clock and in process CPU time (on a busy machine
    the CPU time of a one-thread run, ``--threads 1``, is the steadier: time spent descheduled is
    not in it); ``*_to_baseline`` < 1 is faster than the baseline. The count of tokens whose codes
    differ is reported too (near ties, where the baseline's float32 argmin was not the exact one)."""
    from simvq import search

    baseline = load_search_module(baseline_path)
    result = {}
    for method in ("fp32", "screened"):
        runs = {"new": lambda method=method: search.nearest(x, codebook, method=method),
                "baseline": lambda method=method: baseline.nearest(x, codebook, method=method)}
        wall = {name: float("inf") for name in runs}
        cpu = dict(wall)
        for fn in runs.values():
            fn()  # warm-up
        for repeat in range(repeats):
            for name in ("new", "baseline") if repeat % 2 else ("baseline", "new"):  # either may go first
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                runs[name]()
                wall[name] = min(wall[name], time.perf_counter() - start_wall)
                cpu[name] = min(cpu[name], time.process_time() - start_cpu)
        result[f"search_{method}_new_s"] = wall["new"]
        result[f"search_{method}_baseline_s"] = wall["baseline"]
        result[f"search_{method}_to_baseline"] = wall["new"] / wall["baseline"]
        result[f"search_{method}_cpu_to_baseline"] = cpu["new"] / cpu["baseline"]
        result[f"search_{method}_codes_differ"] = int((runs["new"]()[0] != runs["baseline"]()[0]).sum())
    return result


def measure_eval_cache(quantizer, z, repeats: int) -> dict:
    """Eval-mode forward (cached W(C)) over train-mode forward, at the benchmark batch and at 256 tokens."""
    import torch

    with torch.no_grad():
        train_forward = timed(lambda: quantizer(z), repeats)
        small = z[:1, :256]
        train_small = timed(lambda: quantizer(small), repeats)
        quantizer.eval()
        eval_forward = timed(lambda: quantizer(z), repeats)
        eval_small = timed(lambda: quantizer(small), repeats)
        quantizer.train()
    return {"eval_to_train_forward": eval_forward / train_forward, "eval_to_train_forward_256_tokens": eval_small / train_small}


def measure_peer(z, codebook_size: int, gemm_s: float, repeats: int) -> dict:
    """vector-quantize-pytorch's SimVQ on the same input, when installed and when it fits."""
    try:
        from vector_quantize_pytorch import SimVQ as PeerSimVQ
    except ImportError:
        return {"peer": "not installed"}
    if codebook_size > 65536:
        return {"peer": "skipped (full distance matrix does not fit in 24 GiB)"}
    peer = PeerSimVQ(dim=DIM, codebook_size=codebook_size)

    def peer_step():
        quantized, _, loss = peer(z)
        (quantized.square().mean() + loss).backward()

    before = rss_bytes()
    peer_step()
    result = {"peer_peak_extra_mib": (peak_rss_bytes() - before) / 2**20}
    result["peer_step_s"] = timed(peer_step, max(1, repeats - 1))
    result["peer_ratio_to_gemm"] = result["peer_step_s"] / gemm_s
    return result


def child(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    payload = run_one(args.child, args.repeats, args.memory_only, args.search_only, args.baseline_file)
    if args.with_sgemm and not args.search_only:
        payload["square_sgemm_gflops"] = square_sgemm_gflops(args.repeats)
    print("RESULT " + json.dumps(payload))


def spawn(codebook_size: int, args, memory_only=False, with_sgemm=False) -> dict:
    command = [sys.executable, __file__, "--child", str(codebook_size), "--repeats", str(args.repeats)]
    if memory_only:
        command.append("--memory-only")
    if with_sgemm:
        command.append("--with-sgemm")
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.search_only:
        command.append("--search-only")
    if args.baseline_file:
        command += ["--baseline-file", args.baseline_file]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"codebook_size": codebook_size, "error": completed.stderr.strip().splitlines()[-1:]}


def table(rows: list[dict], sgemm: float) -> str:
    lines = [
        f"Square 2048^3 sgemm on this machine: {sgemm:.0f} GFLOP/s (same run). "
        f"Step = SimVQ forward+backward, {TOKENS} tokens, d={DIM}. Ratios < 1 are faster than the reference GEMM.",
        "",
        "| K | step (s) | chunked GEMM (s) | step / GEMM | step GFLOP/s | % of sgemm | search fp32 (s) | search screened (s) "
        "| peak extra (MiB) | eval/train fwd (16k tok / 256 tok) | vector-quantize-pytorch step / GEMM, peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['codebook_size']:,} | failed: {row['error']} |||||||||")
            continue
        if "step_s" not in row:
            lines.append(
                f"| {row['codebook_size']:,} | {row['first_step_s']:.2f} (one step) | | | | | | | {row['peak_extra_mib']:.0f} | | |"
            )
            continue
        peer = row.get("peer")
        if "peer_step_s" in row:
            peer = f"{row['peer_ratio_to_gemm']:.2f}x, {row['peer_peak_extra_mib']:.0f}"
        lines.append(
            f"| {row['codebook_size']:,} | {row['step_s']:.3f} | {row['gemm_s']:.3f} | **{row['ratio_step_to_gemm']:.2f}** | "
            f"{row['step_gflops']:.0f} | {100 * row['step_gflops'] / sgemm:.0f}% | {row['search_fp32_s']:.3f} | "
            f"{row['search_screened_s']:.3f} | {row['peak_extra_mib']:.0f} | "
            f"{row['eval_to_train_forward']:.2f} / {row['eval_to_train_forward_256_tokens']:.2f} | {peer} |"
        )
    return "\n".join(lines)


def baseline_table(rows: list[dict], baseline: str) -> str:
    lines = [
        f"Search against {baseline}'s, {TOKENS} tokens, d={DIM}, the same data, timed in alternation (best of the repeats):",
        "",
        "| K | method | this revision (s) | baseline (s) | ratio | ratio of CPU time | codes that differ |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['codebook_size']:,} | failed: {row['error']} ||||||")
        for method in ("fp32", "screened"):
            if f"search_{method}_to_baseline" in row:
                lines.append(
                    f"| {row['codebook_size']:,} | {method} | {row[f'search_{method}_new_s']:.3f} | {row[f'search_{method}_baseline_s']:.3f} | "
                    f"**{row[f'search_{method}_to_baseline']:.3f}** | {row[f'search_{method}_cpu_to_baseline']:.3f} | "
                    f"{row[f'search_{method}_codes_differ']} |"
                )
    return "\n".join(lines)


def write_docs(text: str) -> None:
    from simvq.utils import atomic_write_text

    path = ROOT / "docs" / "results.md"
    content = path.read_text() if path.exists() else "# Results\n"
    block = f"{DOCS_BEGIN}\n{text}\n{DOCS_END}"
    if DOCS_BEGIN in content:
        head, rest = content.split(DOCS_BEGIN, 1)
        content = head + block + rest.split(DOCS_END, 1)[1]
    else:
        content = content.rstrip() + "\n\n### Search speed and memory (`benchmarks/search.py`)\n\n" + block + "\n"
    atomic_write_text(path, content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 8192, 65536, 262144], help="sizes timed in full")
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[1_048_576], help="sizes measured for memory only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--baseline", help="a git revision whose search is timed alongside this one's (e.g. HEAD~1)")
    parser.add_argument("--search-only", action="store_true", help="time only the searches (with --baseline: a short run)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-file", help=argparse.SUPPRESS)
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--with-sgemm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    if args.write_docs and args.search_only:
        parser.error("--write-docs needs the full measurements: drop --search-only")
    if args.baseline:
        source = subprocess.run(
            ["git", "show", f"{args.baseline}:src/simvq/search.py"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        handle = tempfile.NamedTemporaryFile("w", suffix="_search.py", delete=False)
        handle.write(source)
        handle.close()
        args.baseline_file = handle.name
    rows = []
    for index, size in enumerate(args.sizes):
        rows.append(spawn(size, args, with_sgemm=index == 0))
        print(json.dumps(rows[-1]), flush=True)
    for size in [] if args.search_only else args.memory_sizes:
        rows.append(spawn(size, args, memory_only=True))
        print(json.dumps(rows[-1]), flush=True)
    if args.baseline:
        os.unlink(args.baseline_file)
        print()
        print(baseline_table(rows, args.baseline))
    if args.search_only:
        return
    sgemm = next((row["square_sgemm_gflops"] for row in rows if "square_sgemm_gflops" in row), float("nan"))
    text = table(rows, sgemm)
    print()
    print(text)
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
