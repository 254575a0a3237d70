"""A bounded crowd against a running app, on loopback only.

    python -m tests.load_test --url http://127.0.0.1:7860 --clients 8

Every client uploads the example pair and asks for one small picture at the same moment; the report
says how many pictures came back, how many were refused as busy, any other errors, the p50/p95 wait
and the server's peak resident memory (when --pid names the server process).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from . import raw_http

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BUSY = "Queue is full"  # Gradio's refusal when the queue holds its maximum




def run_load(url: str, clients: int = 8, size: int = 64, steps: int = 3, timeout: float = 120, pid: int | None = None) -> dict:
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the load test only targets loopback addresses")
    job = raw_http.arguments(url, "stylize", content=raw_http.upload(url, EXAMPLES / "chelsea.jpg"),
                             style=raw_http.upload(url, EXAMPLES / "starry_night.jpg"), size=size, steps=steps)
    peak_rss, sampling = [0], threading.Event()

    def sample() -> None:
        import psutil

        process = psutil.Process(pid)
        while not sampling.is_set():
            peak_rss[0] = max(peak_rss[0], process.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True) if pid else None
    if sampler:
        sampler.start()
    barrier = threading.Barrier(clients)

    def one_client(_: int) -> tuple[str, float, object]:
        barrier.wait(timeout=30)
        start = time.perf_counter()
        event, reply = raw_http.call(url, "stylize", job, timeout=timeout)
        return event, time.perf_counter() - start, reply

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one_client, range(clients), timeout=timeout + 60))
    sampling.set()
    waits = sorted(seconds for event, seconds, _ in results if event == "complete")
    failed = [json.dumps(reply) for event, _, reply in results if event != "complete"]
    refusals = [reply for reply in failed if BUSY in reply]
    return {
        "clients": clients,
        "done": len(waits),
        "refused": len(refusals),
        "errors": sorted(reply for reply in failed if BUSY not in reply),
        "p50_wait_s": statistics.median(waits) if waits else None,
        "p95_wait_s": waits[min(len(waits) - 1, round(0.95 * (len(waits) - 1)))] if waits else None,
        "peak_rss_mb": peak_rss[0] / 2**20 if pid else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--clients", type=int, default=8, choices=range(1, 65), metavar="1..64")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--pid", type=int, default=None, help="server process id, for its peak memory")
    args = parser.parse_args()
    print(json.dumps(run_load(args.url, args.clients, args.size, args.steps, args.timeout, args.pid), indent=2))


if __name__ == "__main__":
    main()
