"""Many users at once: llm-worker-rbee against llama.cpp's llama-server, same GGUF.

For each model and each N, a fresh worker started with `--parallel N` and a fresh
`llama-server -np N` (both with the same thread count and the same KV positions per
slot) each get N concurrent greedy requests with different prompts, 64 tokens each.
Reported per server: aggregate generated tokens/s (tokens from each server's own
final statistics, over the wall time from the first request sent to the last stream
ended) and each stream's time to first token as the client saw it (request sent to
first token received: for concurrent users, the time waiting for a slot or behind
the others' prefill is part of it).

Also measured:
- a new request's time to first token while N-1 others are generating, against the
  same measurement on the idle server;
- prompt-prefix reuse, on the server with the fewest slots: a ~1,000-token chat
  prompt the first time, its identical repeat, and the next turn (history, the
  reply and a new question, re-sent whole).

Loopback only; every request and every start is bounded in time; servers are
stopped on every exit.
"""

import argparse
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

REQUEST_TIMEOUT_S = 600
START_TIMEOUT_S = 300
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# One topic per stream, each starting with a different word: prompts share the system
# prompt and nothing after it.
TOPICS = [
    "Volcanoes form where molten rock reaches the surface of the Earth.",
    "Bread rises because yeast ferments sugars and releases carbon dioxide.",
    "Tides follow the pull of the Moon and, to a lesser degree, the Sun.",
    "Copper was one of the first metals that people learned to smelt.",
    "Honeybees share where flowers are with a dance inside the hive.",
    "Glaciers carve wide valleys as they slide slowly downhill.",
    "Lighthouses guided ships along dangerous coasts for centuries.",
    "Vaccines train the immune system to recognise a pathogen.",
    "Railways changed how fast goods and people crossed continents.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "Compilers translate source code into instructions a processor runs.",
    "Owls hunt at night thanks to their hearing and silent flight.",
    "Democracy in ancient Athens let citizens vote in an assembly.",
    "Rainbows appear when sunlight is refracted inside raindrops.",
    "Paper money replaced coins for large payments in medieval China.",
    "Earthquakes release stress built up along faults in the crust.",
    "Coral reefs are built by tiny animals that live with algae.",
    "Telescopes gather light so that faint, distant objects can be seen.",
    "Windmills ground grain and pumped water long before electricity.",
    "Antibiotics kill bacteria or stop them from multiplying.",
    "Salt was so valuable that soldiers were sometimes paid with it.",
    "Migrating birds navigate using the stars and the magnetic field.",
]
ASK = (" Explain in detail, step by step, what a curious student should know about "
       "this, with examples from history and from everyday life, and why it matters today.")


def stream_prompt(i, attempt=0):
    """A chat's first turn; the stream's own topic comes right after the system prompt
    (after a marker on a repeated attempt, so no prompt repeats one already cached)."""
    marker = f"({attempt + 1}) " if attempt else ""
    return chatml([("user", marker + TOPICS[i % len(TOPICS)] + ASK)])


def chatml(turns):
    """The test model's chat template, rendered by hand so both servers see one text."""
    text = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    for role, content in turns:
        text += f"<|im_start|>{role}\n{content}<|im_end|>\n"
    return text + "<|im_start|>assistant\n"


def long_document():
    """Study notes for the prefix-reuse chat: its first prompt is about 1,000 tokens."""
    notes = [f"Note {i + 1}: {TOPICS[i % len(TOPICS)]}" for i in range(NOTES)]
    return "Here are my study notes.\n" + "\n".join(notes)


NOTES = 53
FIRST_QUESTION = "Which of these notes are about living things? Answer briefly."
NEXT_QUESTION = "And which of them are about machines or tools? Answer briefly."


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process started for one run, stopped on every exit."""

    name = ""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.proc = None
        self.url = None
        self.log = None

    def open_log(self, name):
        self.log = open(os.path.join(self.log_dir, name), "w")  # noqa: SIM115 - closed in stop
        return self.log

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def _post(self, path, body):
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(),
            headers={"content-type": "application/json"})
        return urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S)


class Worker(Server):
    name = "worker"

    def __init__(self, log_dir, binary, threads):
        super().__init__(log_dir)
        self.binary = binary
        self.threads = threads
        self.engine = None

    def start(self, model, slots, ctx_per_slot):
        env = dict(os.environ, RAYON_NUM_THREADS=str(self.threads), RUST_LOG="warn")
        env.pop("RBEE_WORKER_TOKEN", None)
        log = self.open_log(f"worker-{slots}.log")
        self.proc = subprocess.Popen(
            [self.binary, "--worker-id", "bench", "--model", model, "--port", "0",
             "--queen-url", "http://127.0.0.1:9", "--heartbeat-interval", "60",
             "--engine", "auto", "--parallel", str(slots),
             "--ctx-size", str(slots * ctx_per_slot), "--queue-capacity", str(slots + 8)],
            stdout=subprocess.PIPE, stderr=log, env=env, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(
            json.loads(line) for line in iter(self.proc.stdout.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            ready = [e for e in lines if e.get("event") == "ready"]
            if ready:
                self.url = next(e["url"] for e in lines if e.get("event") == "listening")
                self.engine = ready[0].get("engine")
                if ready[0].get("slots") not in (None, slots):
                    raise RuntimeError(f"worker has {ready[0]['slots']} slots, asked {slots}")
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({self.proc.returncode}); see {log.name}")
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready in {START_TIMEOUT_S} s")

    def generate(self, prompt, max_tokens, on_token=None):
        """Returns (first-token time, end stats, text); times are time.monotonic()."""
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        first = None
        text = []
        event = None
        with self._post("/v1/inference", body) as response:
            for raw in response:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: "):
                    data = json.loads(line[len("data: "):])
                    if event == "token":
                        if first is None:
                            first = time.monotonic()
                        text.append(data["t"])
                        if on_token:
                            on_token()
                    elif event == "end":
                        return first, {"tokens": data["tokens"],
                                       "prompt_tokens": data["prompt_tokens"],
                                       "stop": data["stop_reason"]}, "".join(text)
                    elif event == "error":
                        raise RuntimeError(f"worker error: {data}")
        raise RuntimeError("worker stream ended without an end event")


class LlamaServer(Server):
    name = "llama-server"

    def __init__(self, log_dir, binary, threads):
        super().__init__(log_dir)
        self.binary = binary
        self.threads = threads

    def start(self, model, slots, ctx_per_slot):
        port = free_port()
        log = self.open_log(f"llama-server-{slots}.log")
        self.proc = subprocess.Popen(
            [self.binary, "-m", model, "--host", "127.0.0.1", "--port", str(port),
             "-t", str(self.threads), "-tb", str(self.threads), "-np", str(slots),
             "-c", str(slots * ctx_per_slot)],
            stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited ({self.proc.returncode}); see {log.name}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llama-server not ready in {START_TIMEOUT_S} s")

    def generate(self, prompt, max_tokens, on_token=None):
        body = {"prompt": prompt, "n_predict": max_tokens, "temperature": 0,
                "stream": True, "cache_prompt": True}
        first = None
        text = []
        with self._post("/completion", body) as response:
            for raw in response:
                line = raw.decode().rstrip("\n")
                if not line.startswith("data: "):
                    continue
                data = json.loads(line[len("data: "):])
                if "error" in data:
                    raise RuntimeError(f"llama-server error: {data['error']}")
                if data.get("stop"):
                    timings = data["timings"]
                    return first, {"tokens": timings["predicted_n"],
                                   "prompt_tokens": data.get("tokens_evaluated"),
                                   "prompt_processed": timings["prompt_n"],
                                   "stop": data.get("stop_type")}, "".join(text)
                if first is None:
                    first = time.monotonic()
                text.append(data.get("content", ""))
                if on_token:
                    on_token()
        raise RuntimeError("llama-server stream ended without a final chunk")


def one(server, prompt, max_tokens):
    sent = time.monotonic()
    first, stats, text = server.generate(prompt, max_tokens)
    return {"ttft_s": first - sent if first else None, **stats, "text": text}


def concurrent(server, prompts, max_tokens):
    """N requests sent at once; aggregate tokens/s and each stream's TTFT."""
    results = [None] * len(prompts)
    errors = []
    barrier = threading.Barrier(len(prompts))

    def run(i):
        try:
            barrier.wait()
            sent = time.monotonic()
            first, stats, _ = server.generate(prompts[i], max_tokens)
            results[i] = {"sent": sent, "first": first, "done": time.monotonic(), **stats}
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{server.name}: {errors[0]}")
    wall = max(r["done"] for r in results) - min(r["sent"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    ttfts = [r["first"] - r["sent"] for r in results]
    return {"streams": len(prompts), "tokens": tokens, "wall_s": wall,
            "tok_s": tokens / wall, "ttft_mean_s": sum(ttfts) / len(ttfts),
            "ttft_max_s": max(ttfts), "stops": sorted({r["stop"] for r in results})}


def under_load(server, slots, max_tokens, attempt):
    """TTFT of a new request on the idle server, then while slots-1 others generate."""
    idle = one(server, stream_prompt(len(TOPICS) - 1, attempt), 8)
    busy_prompts = [stream_prompt(i, attempt) for i in range(slots - 1)]
    started = [threading.Event() for _ in busy_prompts]
    finished = [threading.Event() for _ in busy_prompts]
    errors = []

    def background(i):
        try:
            server.generate(busy_prompts[i], max_tokens, on_token=started[i].set)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            started[i].set()
            finished[i].set()

    threads = [threading.Thread(target=background, args=(i,)) for i in range(slots - 1)]
    for t in threads:
        t.start()
    for e in started:
        e.wait(REQUEST_TIMEOUT_S)
    time.sleep(0.2)  # every other stream is past its prompt and generating
    generating = []

    def first_token():
        if not generating:
            generating.append(sum(not f.is_set() for f in finished))

    sent = time.monotonic()
    first, probe, _ = server.generate(stream_prompt(len(TOPICS) - 2, attempt), 8,
                                      on_token=first_token)
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{server.name}: {errors[0]}")
    return {"idle_ttft_s": idle["ttft_s"], "busy_ttft_s": first - sent,
            "others": slots - 1, "others_generating": generating[0],
            "probe_prompt_tokens": probe["prompt_tokens"]}


def prefix_reuse(server, max_tokens):
    """A ~1,000-token chat prompt, its identical repeat and the chat's next turn."""
    first_turn = [("user", long_document() + "\n\n" + FIRST_QUESTION)]
    prompt = chatml(first_turn)
    first = one(server, prompt, max_tokens)
    repeat = one(server, prompt, 8)
    next_prompt = chatml(first_turn + [("assistant", first["text"]), ("user", NEXT_QUESTION)])
    following = one(server, next_prompt, 8)
    return {"prompt_tokens": first["prompt_tokens"], "first_s": first["ttft_s"],
            "reply_tokens": first["tokens"], "reply_stop": first["stop"],
            "repeat_s": repeat["ttft_s"], "next_turn_s": following["ttft_s"],
            "next_turn_prompt_tokens": following["prompt_tokens"]}


def cpu_seconds(pid):
    """(CPU seconds busy on the whole machine, used by pid, used by this process)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy
    # (steal too: on a virtual machine it is CPU time taken by others).
    busy = sum(fields[:8]) - fields[3] - fields[4]
    with open(f"/proc/{pid}/stat") as f:
        after_comm = f.read().rsplit(")", 1)[1].split()
    server = int(after_comm[11]) + int(after_comm[12])
    own = os.times()
    return busy / tick, server / tick, own.user + own.system


def least_disturbed(server, measure, attempts, max_other):
    """Runs measure(attempt) until what else ran on the machine meanwhile (the busy time
    of every CPU less the server's and this client's own, in cores) is at most
    max_other, at most `attempts` times; returns the least disturbed run. On a shared
    machine a build next door slows both servers, and llama.cpp far more (its threads
    spin at every barrier while one of them waits for a core)."""
    best = None
    for attempt in range(attempts):
        before = time.monotonic(), cpu_seconds(server.proc.pid)
        result = measure(attempt)
        after = time.monotonic(), cpu_seconds(server.proc.pid)
        busy, served, own = (b - a for a, b in zip(before[1], after[1], strict=True))
        result["other_cores"] = max(0.0, busy - served - own) / (after[0] - before[0])
        result["kept"] = attempt + 1
        if best is None or result["other_cores"] < best["other_cores"]:
            best = result
        if result["other_cores"] <= max_other:
            break
    best["attempts"] = attempt + 1
    return best


def run_server(server, model, slots, ctx_per_slot, max_tokens, with_prefix, attempts,
               max_other):
    server.start(model, slots, ctx_per_slot)
    try:
        one(server, stream_prompt(len(TOPICS) - 3), 4)  # first-touch pages, threads
        result = least_disturbed(server, lambda a: concurrent(
            server, [stream_prompt(i, a) for i in range(slots)], max_tokens),
            attempts, max_other)
        if slots > 1:
            result["load"] = least_disturbed(
                server, lambda a: under_load(server, slots, max_tokens, a), attempts, max_other)
        if with_prefix:
            result["prefix"] = least_disturbed(
                server, lambda _: prefix_reuse(server, max_tokens), 1, max_other)
        return result
    finally:
        server.stop()


def batched_bench(binary, model, streams, threads, tokens):
    """llama.cpp's own batched decode rate, no HTTP and no scheduling: {N: TG tok/s}."""
    if not binary:
        return {}
    try:
        out = subprocess.run(
            [binary, "-m", model, "-c", str(max(streams) * (64 + tokens) * 2), "-b", "2048",
             "-ub", "512", "-t", str(threads), "-tb", str(threads), "-npp", "64",
             "-ntg", str(tokens), "-npl", ",".join(map(str, streams))],
            capture_output=True, text=True, timeout=900, check=True).stdout
    except (subprocess.SubprocessError, OSError) as e:
        print(f"llama-batched-bench failed: {e}", file=sys.stderr)
        return {}
    rates = {}
    header = None
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "S_TG t/s" in cells:
            header = cells
        elif header and len(cells) == len(header) and cells[0].isdigit():
            rates[int(cells[header.index("B")])] = float(cells[header.index("S_TG t/s")])
    return rates


def machine():
    model_name = cores = ""
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            model_name = value.strip()
    cores = os.cpu_count()
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    avx512 = "AVX-512" if " avx512f" in flags else "no AVX-512"
    return f"{model_name}, {cores} cores, {avx512}"


def fmt(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}"


def report(args, results, batched, worker_engine, llama_version):
    print()
    print(f"machine: {machine()}; threads: {args.threads} (worker RAYON_NUM_THREADS, "
          f"llama-server -t/-tb); worker engine: {worker_engine}, build: {args.profile}; "
          f"llama.cpp from llama-cpp-python {llama_version}; {args.tokens} tokens per "
          f"stream, greedy; KV positions per slot: {args.ctx_per_slot}; "
          f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print()
    print("Aggregate generated tokens/s (N concurrent streams, different prompts) and "
          "time to first token per stream (client side, mean / max). Other load: the CPU "
          "time used by everything but the server and the client during the measurement, "
          f"in cores (worker / llama-server); each measurement is the least disturbed of up "
          f"to {args.attempts} (repeated while other load > {args.max_other} cores). "
          "llama-batched-bench: llama.cpp's decode "
          "rate for N sequences with no server (64-token prompts, same threads):")
    print()
    print("| model | N | worker tok/s | llama-server tok/s | worker / llama | "
          "worker N / worker 1 | worker TTFT s | llama-server TTFT s | other load | "
          "llama-batched-bench |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model, by_n in results.items():
        if not by_n:
            continue
        base = by_n[1]["worker"]["tok_s"] if 1 in by_n else None
        for n, pair in by_n.items():
            w, l = pair["worker"], pair["llama"]
            own = f"{w['tok_s'] / base:.2f}×" if base else "–"
            print(f"| {model} | {n} | {w['tok_s']:.1f} | {l['tok_s']:.1f} | "
                  f"{w['tok_s'] / l['tok_s']:.2f}× | {own} | "
                  f"{fmt(w['ttft_mean_s'], 2)} / {fmt(w['ttft_max_s'], 2)} | "
                  f"{fmt(l['ttft_mean_s'], 2)} / {fmt(l['ttft_max_s'], 2)} | "
                  f"{w['other_cores']:.1f} / {l['other_cores']:.1f} | "
                  f"{fmt(batched.get(model, {}).get(n))} |")
    print()
    print("A new request's time to first token (s) on the idle server and while N-1 "
          "others generate:")
    print()
    print("| model | N | worker idle | worker busy | busy / idle | "
          "llama-server idle | llama-server busy | busy / idle | other load |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model, by_n in results.items():
        for n, pair in by_n.items():
            w, l = pair["worker"].get("load"), pair["llama"].get("load")
            if not w:
                continue
            def busy(r):
                # Fewer than N-1 still generating at the probe's first token is shown.
                shown = f"{r['busy_ttft_s']:.3f}"
                if r["others_generating"] < r["others"]:
                    shown += f" ({r['others_generating']} others)"
                return shown

            print(f"| {model} | {n} | {w['idle_ttft_s']:.3f} | {busy(w)} | "
                  f"{w['busy_ttft_s'] / w['idle_ttft_s']:.2f}× | {l['idle_ttft_s']:.3f} | "
                  f"{busy(l)} | {l['busy_ttft_s'] / l['idle_ttft_s']:.2f}× | "
                  f"{w['other_cores']:.1f} / {l['other_cores']:.1f} |")
    print()
    print("Prompt-prefix reuse: time to first token (s) of a chat's first turn, its "
          "identical repeat, and the next turn re-sent whole:")
    print()
    print("| model | server | prompt tokens | first | repeat | repeat / first | "
          "next turn | next / first | other load |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model, by_n in results.items():
        for n, pair in by_n.items():
            for label, key in (("worker", "worker"), ("llama-server", "llama")):
                p = pair[key].get("prefix")
                if not p:
                    continue
                print(f"| {model} | {label} (N={n}) | {p['prompt_tokens']} → "
                      f"{p['next_turn_prompt_tokens']} | {p['first_s']:.3f} | "
                      f"{p['repeat_s']:.3f} | {p['repeat_s'] / p['first_s']:.3f}× | "
                      f"{p['next_turn_s']:.3f} | {p['next_turn_s'] / p['first_s']:.3f}× | "
                      f"{p['other_cores']:.1f} |")
    print()
    print("Targets (issue 20, 2 threads): on the ~1B file, 8 streams ≥ 1.2× llama-server "
          "and ≥ 3× the worker's one-stream rate; on the test model ≥ 1.0× llama-server "
          "at 8 streams; a new request's TTFT while 7 others generate ≤ 2× idle; prefix "
          "reuse: repeat ≤ 0.2× and next turn ≤ 0.3× the first turn.")
    print()
    for line in verdicts(results):
        print(f"- {line}")


def verdicts(results):
    lines = []

    def check(label, value, op, target):
        ok = value >= target if op == "≥" else value <= target
        lines.append(f"{label}: {value:.3f}× ({op} {target}×: {'met' if ok else 'missed'})")

    for model, by_n in results.items():
        eight = by_n.get(8)
        if eight:
            w, l = eight["worker"], eight["llama"]
            target = 1.2 if model == "1b" else 1.0
            check(f"{model}, 8 streams, worker / llama-server", w["tok_s"] / l["tok_s"],
                  "≥", target)
            if model == "1b" and 1 in by_n:
                check(f"{model}, 8 streams / worker's 1 stream",
                      w["tok_s"] / by_n[1]["worker"]["tok_s"], "≥", 3)
            if "load" in w:
                check(f"{model}, worker TTFT with 7 others generating / idle",
                      w["load"]["busy_ttft_s"] / w["load"]["idle_ttft_s"], "≤", 2)
        for pair in by_n.values():
            p = pair["worker"].get("prefix")
            if p:
                check(f"{model}, worker prefix reuse, repeat / first",
                      p["repeat_s"] / p["first_s"], "≤", 0.2)
                check(f"{model}, worker prefix reuse, next turn / first",
                      p["next_turn_s"] / p["first_s"], "≤", 0.3)
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True)
    parser.add_argument("--llama-server", required=True)
    parser.add_argument("--llama-version", default="?")
    parser.add_argument("--batched-bench", help="llama-batched-bench, run once per model")
    parser.add_argument("--model", action="append", required=True,
                        help="NAME=PATH, once per model")
    parser.add_argument("--streams", default="1,4,8,16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--ctx-per-slot", type=int, default=2048)
    parser.add_argument("--profile", default="dev")
    parser.add_argument("--attempts", type=int, default=3,
                        help="runs of a measurement while other load exceeds --max-other")
    parser.add_argument("--max-other", type=float, default=0.25,
                        help="cores used by other processes that count as undisturbed")
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args()

    # A SIGTERM (the shell's trap, `timeout`) unwinds through the finally blocks that
    # stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(args.log_dir, exist_ok=True)
    streams = sorted(int(n) for n in args.streams.split(","))
    worker = Worker(args.log_dir, args.worker, args.threads)
    llama = LlamaServer(args.log_dir, args.llama_server, args.threads)
    results = {}
    batched = {}
    failure = None
    try:
        for spec in args.model:
            name, _, path = spec.partition("=")
            results[name] = {}
            for n in streams:
                with_prefix = n == streams[0]
                pair = {}
                for server, key in ((worker, "worker"), (llama, "llama")):
                    began = time.monotonic()
                    pair[key] = run_server(server, path, n, args.ctx_per_slot, args.tokens,
                                           with_prefix, args.attempts, args.max_other)
                    print(f"{name} N={n} {server.name}: {pair[key]['tok_s']:.1f} tok/s "
                          f"({pair[key]['tokens']} tokens in {pair[key]['wall_s']:.1f} s, "
                          f"stops {pair[key]['stops']}; run {time.monotonic() - began:.0f} s, "
                          f"other CPU load {pair[key]['other_cores']:.2f} cores, "
                          f"attempt {pair[key]['kept']} of {pair[key]['attempts']} kept)",
                          file=sys.stderr, flush=True)
                results[name][n] = pair
            batched[name] = batched_bench(args.batched_bench, path, streams, args.threads,
                                          args.tokens)
            print(f"{name} llama-batched-bench: {batched[name]}", file=sys.stderr, flush=True)
    except (Exception, KeyboardInterrupt, SystemExit) as e:  # noqa: BLE001 - reported
        failure = e
    finally:
        worker.stop()
        llama.stop()
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"servers": results, "batched_bench": batched}, f, indent=1)
    # What was measured before a failure or the time limit is still printed.
    report(args, results, batched, worker.engine, args.llama_version)
    if failure is not None:
        print(f"\nINCOMPLETE: stopped by {failure!r}; the rows above are the runs that "
              "finished", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
