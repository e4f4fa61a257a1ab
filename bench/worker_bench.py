"""Measures llm-worker-rbee and llama.cpp side by side on one GGUF file.

Both run the same prompt greedily for the same number of tokens. Each engine's own
timers are used: the worker's `end` event (ttft_ms, tokens_per_s) and llama.cpp's
perf counters, so HTTP overhead is not counted against the worker.

With `--llama-server PATH`, llama.cpp's server is also started on the file (same
threads, 2048 positions) until its `/health` answers, three times, and the median of
its start-to-ready times is reported beside the worker's (the median of its own three
starts): the issue's "ready no later than llama-server + 0.2 s".
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

PROMPT = (
    "The history of the printing press begins in the fifteenth century, when "
    "Johannes Gutenberg combined movable metal type, oil-based inks and a wooden "
    "press adapted from wine making. Within fifty years, presses were running in "
    "more than two hundred European cities, and the cost of books fell sharply. "
    "Explain, step by step, how this invention changed science, religion and politics"
)
MAX_TOKENS = 128
RUNS = 3
# How many times the prompt's paragraph is repeated (`--repeat`): 1 gives 73 tokens on
# the bench files; more measures prompts and decode steps over a longer context.
REPEAT = 1


def prompt(run):
    """The prompt of one run: a different first word each run, so no engine serves a
    run's prompt from the cache an earlier one left (the worker keeps each slot's
    prefix; llama.cpp is reset between runs)."""
    return f"{'ABCDEFGH'[run]}. {' '.join([PROMPT] * REPEAT)}"


def context():
    """The positions each engine holds: the prompt and its answer, with room to spare."""
    return max(2048, 128 * REPEAT + 512)


def start_worker(binary, model, threads):
    """The worker started on `model`: its process, URL, `ready` event and seconds from
    the start to that event. A context longer than the worker's default slot (4,096
    positions) is one slot of that length, as llama.cpp's is one sequence."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), RUST_LOG="warn")
    env.pop("RBEE_WORKER_TOKEN", None)
    longer = ["--parallel", "1", "--ctx-size", str(context())] if context() > 4096 else []
    started = time.monotonic()
    proc = subprocess.Popen(
        [binary, "--worker-id", "bench", "--model", model, "--port", "0",
         "--queen-url", "http://127.0.0.1:9", "--heartbeat-interval", "60", *longer],
        stdout=subprocess.PIPE, env=env, text=True)
    try:
        url = json.loads(proc.stdout.readline())["url"]
        ready = json.loads(proc.stdout.readline())
    except Exception:
        proc.terminate()
        raise
    return proc, url, ready, time.monotonic() - started


def worker_bench(binary, model, threads):
    # Start-to-ready is the median of three starts, as llama-server's is: one start
    # alone has read anywhere from 0.3 to 1.6 s for a file that loads in 0.3 s.
    ready_times = []
    for _ in range(2):
        proc, _, _, wall = start_worker(binary, model, threads)
        proc.terminate()
        proc.wait(timeout=30)
        ready_times.append(wall)
    proc, url, ready, wall = start_worker(binary, model, threads)
    ready_times.append(wall)
    try:
        wall_ready = statistics.median(ready_times)
        runs = []
        for i in range(RUNS + 1):
            end = infer(url, prompt(i))
            if i > 0:  # the first run warms caches and allocators
                runs.append(end)
        prompt_tps = statistics.median(r["prompt_tokens"] / (r["ttft_ms"] / 1000) for r in runs)
        decode_tps = statistics.median(r["tokens_per_s"] for r in runs)
        return {
            "engine": ready.get("engine", "candle"),
            "load_s": ready["load_ms"] / 1000,
            "start_to_ready_s": wall_ready,
            "start_to_ready_runs_s": ready_times,
            "prompt_tokens": runs[0]["prompt_tokens"],
            "generated": runs[0]["tokens"],
            "prompt_tps": prompt_tps,
            "decode_tps": decode_tps,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def infer(url, text):
    body = json.dumps({"prompt": text, "max_tokens": MAX_TOKENS, "temperature": 0}).encode()
    request = urllib.request.Request(
        url + "/v1/inference", data=body, headers={"content-type": "application/json"})
    event = None
    with urllib.request.urlopen(request) as response:
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event in ("end", "error"):
                data = json.loads(line[len("data: "):])
                if event == "error":
                    sys.exit(f"worker error: {data}")
                return data
    sys.exit("worker stream ended without an end event")


def llama_bench(model, threads):
    import llama_cpp

    started = time.monotonic()
    llm = llama_cpp.Llama(model_path=model, n_threads=threads, n_threads_batch=threads,
                          n_ctx=context(), n_batch=512, verbose=False)
    load_s = time.monotonic() - started
    prompt_tokens = len(llm.tokenize(prompt(0).encode(), add_bos=True))
    runs = []
    for i in range(RUNS + 1):
        llm.reset()
        llama_cpp.llama_perf_context_reset(llm.ctx)
        out = llm.create_completion(prompt(i), max_tokens=MAX_TOKENS, temperature=0.0)
        perf = llama_cpp.llama_perf_context(llm.ctx)
        if i > 0:
            runs.append((perf, out["usage"]["completion_tokens"]))
    return {
        "load_s": load_s,
        "prompt_tokens": prompt_tokens,
        "generated": runs[0][1],
        "prompt_tps": statistics.median(p.n_p_eval / (p.t_p_eval_ms / 1000) for p, _ in runs),
        "decode_tps": statistics.median(p.n_eval / (p.t_eval_ms / 1000) for p, _ in runs),
    }


def server_ready_s(binary, model, threads):
    """Seconds from starting llama-server on `model` to its `/health` answering 200
    (its default warm-up run included), the median of three starts."""
    times = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        started = time.monotonic()
        proc = subprocess.Popen(
            [binary, "-m", model, "--host", "127.0.0.1", "--port", str(port),
             "-t", str(threads), "-tb", str(threads), "-c", "2048"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                if proc.poll() is not None:
                    sys.exit(f"llama-server exited ({proc.returncode}) on {model}")
                if time.monotonic() - started > 120:
                    sys.exit(f"llama-server not ready in 120 s on {model}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health",
                                                timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                time.sleep(0.01)
            times.append(time.monotonic() - started)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return statistics.median(times)


def warm(model):
    """Reads the file once, so that both engines load it from the page cache: the
    worker runs first and would otherwise pay for the disk alone."""
    with open(model, "rb") as f:
        while f.read(1 << 24):
            pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llama-server", help="also time llama-server's start to ready")
    parser.add_argument("--repeat", type=int, default=1,
                        help="repeat the prompt's paragraph this many times (a longer context)")
    args = parser.parse_args()
    global REPEAT
    REPEAT = args.repeat

    warm(args.model)
    worker = worker_bench(args.worker, args.model, args.threads)
    llama = llama_bench(args.model, args.threads)
    if args.llama_server:
        llama["server_ready_s"] = server_ready_s(args.llama_server, args.model, args.threads)
    print(f"model: {os.path.basename(args.model)}, threads: {args.threads}, "
          f"prompt {worker['prompt_tokens']} tokens, {MAX_TOKENS} generated, median of {RUNS}, "
          f"worker engine: {worker['engine']}")
    print(f"{'':18}{'worker':>12}{'llama.cpp':>12}{'ratio':>10}")
    rows = [("load s", "load_s"), ("prompt tok/s", "prompt_tps"), ("decode tok/s", "decode_tps")]
    for label, key in rows:
        ratio = worker[key] / llama[key]
        print(f"{label:18}{worker[key]:12.2f}{llama[key]:12.2f}{ratio:9.2f}x")
    print(f"(worker start-to-ready wall time, median of 3: {worker['start_to_ready_s']:.2f} s "
          f"({', '.join(f'{t:.2f}' for t in worker['start_to_ready_runs_s'])}); "
          f"ratio is worker / llama.cpp; for load s lower is better)")
    if "server_ready_s" in llama:
        print(f"llama-server start-to-ready (warm-up included, median of 3): "
              f"{llama['server_ready_s']:.2f} s; worker - llama-server: "
              f"{worker['start_to_ready_s'] - llama['server_ready_s']:+.2f} s")
    print(json.dumps({"worker": worker, "llama_cpp": llama}))


if __name__ == "__main__":
    main()
