"""Measures llm-worker-rbee and llama.cpp side by side on one GGUF file.

Both run the same prompt greedily for the same number of tokens. Each engine's own
timers are used: the worker's `end` event (ttft_ms, tokens_per_s) and llama.cpp's
perf counters, so HTTP overhead is not counted against the worker. Both stay loaded
and take turns (`--rounds`, 3 unless given, after a warm-up run each): a VM's memory
can be a third faster in one minute than in the next, and runs of one engine and then
the other would put that in the ratio.

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
# Each run's prompt starts with its own letter (see `prompt`).
RUN_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# How many times the prompt's paragraph is repeated (`--repeat`): 1 gives 73 tokens on
# the bench files; more measures prompts and decode steps over a longer context.
REPEAT = 1


def prompt(run):
    """The prompt of one run: a different first word each run, so no engine serves a
    run's prompt from the cache an earlier one left (the worker keeps each slot's
    prefix; llama.cpp is reset between runs)."""
    return f"{RUN_LETTERS[run]}. {' '.join([PROMPT] * REPEAT)}"


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


class Worker:
    """The worker started on a file, three times for its start-to-ready (the median of
    three starts, as llama-server's is: one start alone has read anywhere from 0.3 to
    1.6 s for a file that loads in 0.3 s), the third kept serving."""

    def __init__(self, binary, model, threads):
        ready_times = []
        for _ in range(2):
            proc, _, _, wall = start_worker(binary, model, threads)
            proc.terminate()
            proc.wait(timeout=30)
            ready_times.append(wall)
        self.proc, self.url, self.ready, wall = start_worker(binary, model, threads)
        ready_times.append(wall)
        self.ready_times = ready_times

    def run(self, i):
        """One run's prompt and decode tok/s, from the worker's `end` event."""
        end = infer(self.url, prompt(i))
        self.generated = end["tokens"]
        self.prompt_tokens = end["prompt_tokens"]
        return end["prompt_tokens"] / (end["ttft_ms"] / 1000), end["tokens_per_s"]

    def summary(self):
        return {
            "engine": self.ready.get("engine", "candle"),
            "load_s": self.ready["load_ms"] / 1000,
            "start_to_ready_s": statistics.median(self.ready_times),
            "start_to_ready_runs_s": self.ready_times,
            "prompt_tokens": self.prompt_tokens,
            "generated": self.generated,
        }

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


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


class LlamaCpp:
    """llama.cpp (llama-cpp-python) on the same file, threads and context."""

    def __init__(self, model, threads):
        import llama_cpp

        self.llama_cpp = llama_cpp
        started = time.monotonic()
        self.llm = llama_cpp.Llama(model_path=model, n_threads=threads,
                                   n_threads_batch=threads, n_ctx=context(), n_batch=512,
                                   verbose=False)
        self.load_s = time.monotonic() - started
        self.prompt_tokens = len(self.llm.tokenize(prompt(0).encode(), add_bos=True))

    def run(self, i):
        """One run's prompt and decode tok/s, from llama.cpp's perf counters."""
        self.llm.reset()
        self.llama_cpp.llama_perf_context_reset(self.llm.ctx)
        out = self.llm.create_completion(prompt(i), max_tokens=MAX_TOKENS, temperature=0.0)
        perf = self.llama_cpp.llama_perf_context(self.llm.ctx)
        self.generated = out["usage"]["completion_tokens"]
        return perf.n_p_eval / (perf.t_p_eval_ms / 1000), perf.n_eval / (perf.t_eval_ms / 1000)

    def summary(self):
        return {"load_s": self.load_s, "prompt_tokens": self.prompt_tokens,
                "generated": self.generated}


def rounds(worker, llama, count):
    """`count` rounds after one warm-up run each (caches, allocators): in each, one
    worker run and one llama.cpp run, the first of the two alternating from round to
    round, so that a machine whose memory is faster in one minute than the next (a VM
    beside other guests) slows both alike. Sets each side's medians of prompt and
    decode tok/s, its decode by round, and the medians of the rounds' own prompt and
    decode ratios (on the worker's side)."""
    worker.run(0)
    llama.run(0)
    results = {"worker": [], "llama": []}
    for i in range(1, count + 1):
        order = [("worker", worker), ("llama", llama)]
        for name, engine in order if i % 2 else reversed(order):
            results[name].append(engine.run(i))
    w, l = worker.summary(), llama.summary()
    for side, runs in ((w, results["worker"]), (l, results["llama"])):
        side["prompt_tps"] = statistics.median(p for p, _ in runs)
        side["decode_tps"] = statistics.median(d for _, d in runs)
        side["decode_runs_tps"] = [round(d, 2) for _, d in runs]
    w["decode_ratio_by_round"] = statistics.median(
        a[1] / b[1] for a, b in zip(results["worker"], results["llama"]))
    w["prompt_ratio_by_round"] = statistics.median(
        a[0] / b[0] for a, b in zip(results["worker"], results["llama"]))
    return w, l


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
    parser.add_argument("--rounds", type=int, default=RUNS,
                        help="rounds of one run each, alternating which engine goes first")
    parser.add_argument("--repeat", type=int, default=1,
                        help="repeat the prompt's paragraph this many times (a longer context)")
    args = parser.parse_args()
    global REPEAT
    REPEAT = args.repeat

    if not 1 <= args.rounds <= len(RUN_LETTERS) - 1:
        sys.exit(f"--rounds is 1 to {len(RUN_LETTERS) - 1}, not {args.rounds}")

    warm(args.model)
    engine = Worker(args.worker, args.model, args.threads)
    try:
        worker, llama = rounds(engine, LlamaCpp(args.model, args.threads), args.rounds)
    finally:
        engine.close()
    if args.llama_server:
        llama["server_ready_s"] = server_ready_s(args.llama_server, args.model, args.threads)
    print(f"model: {os.path.basename(args.model)}, threads: {args.threads}, "
          f"prompt {worker['prompt_tokens']} tokens, {MAX_TOKENS} generated, "
          f"median of {args.rounds} alternating rounds, "
          f"worker engine: {worker['engine']}")
    print(f"{'':18}{'worker':>12}{'llama.cpp':>12}{'ratio':>10}")
    rows = [("load s", "load_s"), ("prompt tok/s", "prompt_tps"), ("decode tok/s", "decode_tps")]
    for label, key in rows:
        ratio = worker[key] / llama[key]
        print(f"{label:18}{worker[key]:12.2f}{llama[key]:12.2f}{ratio:9.2f}x")
    print(f"(worker start-to-ready wall time, median of 3: {worker['start_to_ready_s']:.2f} s "
          f"({', '.join(f'{t:.2f}' for t in worker['start_to_ready_runs_s'])}); "
          f"ratio is worker / llama.cpp; for load s lower is better)")
    print(f"(median of the rounds' own ratios: prompt {worker['prompt_ratio_by_round']:.2f}x, "
          f"decode {worker['decode_ratio_by_round']:.2f}x; decode tok/s by round: worker "
          f"{worker['decode_runs_tps']}, llama.cpp {llama['decode_runs_tps']})")
    if "server_ready_s" in llama:
        print(f"llama-server start-to-ready (warm-up included, median of 3): "
              f"{llama['server_ready_s']:.2f} s; worker - llama-server: "
              f"{worker['start_to_ready_s'] - llama['server_ready_s']:+.2f} s")
    print(json.dumps({"worker": worker, "llama_cpp": llama}))


if __name__ == "__main__":
    main()
