"""rbee against its peers on the same machine, in the same run: fan-out against
Ansible, one operation over SSH against local-hive, agent push, and the queen's
overhead on inference. Run by scripts/bench-cluster.sh, which prepares the lab, the
queen and Ansible; prints a table and writes JSON for BENCHMARKS.md.

Standard library only: HTTP and SSE are spoken by hand.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse


def request(base, method, path, body=None, token=None):
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    return conn, conn.getresponse()


def sse_events(response):
    """Yields (event, data, arrival time) from an SSE response as frames arrive."""
    event, data = "message", []
    while True:
        line = response.readline()
        if not line:
            return
        line = line.decode().rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data), time.perf_counter()
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def run_job(base, operation):
    """Runs an operation as a job; returns (seconds, terminal event, events)."""
    started = time.perf_counter()
    conn, response = request(base, "POST", "/v1/jobs", operation)
    job = json.loads(response.read())
    conn.close()
    conn, response = request(base, "GET", f"/v1/jobs/{job['job_id']}/stream")
    events = []
    for event, data, _ in sse_events(response):
        events.append((event, data))
        if event in ("done", "error", "cancelled"):
            break
    conn.close()
    return time.perf_counter() - started, events[-1][0] if events else "none", events


def timed_job(base, operation, runs, label):
    times = []
    for _ in range(runs):
        seconds, terminal, events = run_job(base, operation)
        if terminal != "done":
            sys.exit(f"{label}: the job ended with {terminal}: {events[-3:]}")
        times.append(seconds)
    return times


def timed_command(argv, runs, env=None):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed:\n{out.stdout}\n{out.stderr}")
        times.append(time.perf_counter() - started)
    return times


def restart_queen(keeper, env):
    subprocess.run([keeper, "queen", "stop"], env=env, capture_output=True)
    out = subprocess.run([keeper, "queen", "start"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"queen start failed: {out.stdout}{out.stderr}")


def inference_overhead(base, worker_url, model, runs):
    """TTFT and inter-token time, directly at the worker and through the queen,
    interleaved so both see the same machine load."""
    prompt = {"prompt": "Count from one to twenty:", "max_tokens": 32, "temperature": 0.0}
    direct, queen = {"ttft": [], "gap": []}, {"ttft": [], "gap": []}
    for _ in range(runs):
        # Direct: POST /v1/inference on the worker.
        started = time.perf_counter()
        conn, response = request(worker_url, "POST", "/v1/inference", prompt)
        stamps = []
        for event, _, t in sse_events(response):
            if event == "token":
                stamps.append(t)
            if event in ("end", "error"):
                break
        conn.close()
        direct["ttft"].append(stamps[0] - started)
        direct["gap"].append((stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1))
        # Through the queen: submit an infer job, follow its stream.
        started = time.perf_counter()
        conn, response = request(base, "POST", "/v1/jobs", {"operation": "infer", "model": model, **prompt})
        job = json.loads(response.read())
        conn.close()
        conn, response = request(base, "GET", f"/v1/jobs/{job['job_id']}/stream")
        stamps = []
        for event, _, t in sse_events(response):
            if event == "token":
                stamps.append(t)
            if event in ("done", "error", "cancelled"):
                break
        conn.close()
        queen["ttft"].append(stamps[0] - started)
        queen["gap"].append((stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1))
    return direct, queen


def p50(values):
    return statistics.median(values)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--queen-url", required=True)
    parser.add_argument("--keeper", required=True)
    parser.add_argument("--ansible-dir", required=True, help="holds ansible.cfg and hosts.ini")
    parser.add_argument("--ansible-bin", required=True)
    parser.add_argument("--hosts", type=int, required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--worker-url")
    parser.add_argument("--model")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    env = dict(os.environ)
    base = args.queen_url
    results = {}

    # Agent push: cold (nothing on the hosts) and unchanged (same checksums).
    restart_queen(args.keeper, env)
    cold_push = timed_job(base, {"operation": "hive_install", "hive_id": "lab"}, 1, "install")
    again_push = timed_job(base, {"operation": "hive_install", "hive_id": "lab"}, args.runs, "reinstall")
    results["push_cold_s"] = cold_push[0]
    results["push_unchanged_s"] = p50(again_push)

    # Fan-out of the agent's version check: cold (a fresh queen, no pooled
    # connections) and warm (pooled).
    check = {"operation": "inventory_check", "hive_id": "lab"}
    cold = []
    for _ in range(args.runs):
        restart_queen(args.keeper, env)
        cold += timed_job(base, check, 1, "cold check")
    warm = timed_job(base, check, args.runs, "warm check")
    results["rbee_cold_s"] = p50(cold)
    results["rbee_warm_s"] = p50(warm)

    # Ansible on the same hosts: ping, and a trivial command.
    ansible_env = dict(env, ANSIBLE_CONFIG=os.path.join(args.ansible_dir, "ansible.cfg"))
    hosts = os.path.join(args.ansible_dir, "hosts.ini")
    ping = [args.ansible_bin, "all", "-i", hosts, "-m", "ping"]
    true = [args.ansible_bin, "all", "-i", hosts, "-m", "command", "-a", "true"]
    results["ansible_ping_s"] = p50(timed_command(ping, args.runs, ansible_env))
    results["ansible_true_s"] = p50(timed_command(true, args.runs, ansible_env))

    # One operation on one warm hive: over SSH, and in-process (local-hive).
    one = timed_job(base, {"operation": "inventory_check", "hive_id": "hive-1"}, 20, "one ssh")
    local = timed_job(base, {"operation": "inventory_check", "hive_id": "localhost"}, 20, "one local")
    results["one_ssh_ms"] = p50(one) * 1000
    results["one_local_ms"] = p50(local) * 1000

    if args.worker_url:
        direct, queen = inference_overhead(base, args.worker_url, args.model, args.runs * 2)
        results["direct_ttft_ms"] = p50(direct["ttft"]) * 1000
        results["queen_ttft_ms"] = p50(queen["ttft"]) * 1000
        results["direct_gap_ms"] = p50(direct["gap"]) * 1000
        results["queen_gap_ms"] = p50(queen["gap"]) * 1000

    with open(args.out, "w") as out:
        json.dump(results, out, indent=2)

    n = args.hosts
    rows = [
        (f"fan-out, {n} hosts, cold (new connections)", f"{results['rbee_cold_s']*1000:.0f} ms",
         f"ansible ping {results['ansible_ping_s']*1000:.0f} ms",
         f"{results['ansible_ping_s']/results['rbee_cold_s']:.1f}x faster"),
        (f"fan-out, {n} hosts, warm (pooled)", f"{results['rbee_warm_s']*1000:.0f} ms",
         f"ansible ping {results['ansible_ping_s']*1000:.0f} ms",
         f"{results['ansible_ping_s']/results['rbee_warm_s']:.1f}x faster"),
        (f"fan-out, {n} hosts, warm (pooled)", f"{results['rbee_warm_s']*1000:.0f} ms",
         f"ansible command true {results['ansible_true_s']*1000:.0f} ms",
         f"{results['ansible_true_s']/results['rbee_warm_s']:.1f}x faster"),
        ("one operation, one warm hive, over SSH", f"{results['one_ssh_ms']:.1f} ms", "", ""),
        ("one operation, localhost, in-process (local-hive)", f"{results['one_local_ms']:.2f} ms", "", ""),
        (f"agent push, {n} hosts, cold", f"{results['push_cold_s']*1000:.0f} ms", "", ""),
        (f"agent re-install, {n} hosts, unchanged", f"{results['push_unchanged_s']*1000:.0f} ms",
         "", f"{results['push_unchanged_s']*1000/n:.1f} ms per host"),
    ]
    if args.worker_url:
        rows += [
            ("time to first token, direct / through queen",
             f"{results['direct_ttft_ms']:.1f} / {results['queen_ttft_ms']:.1f} ms", "",
             f"+{results['queen_ttft_ms']-results['direct_ttft_ms']:.1f} ms"),
            ("per-token latency, direct / through queen",
             f"{results['direct_gap_ms']:.2f} / {results['queen_gap_ms']:.2f} ms", "",
             f"+{results['queen_gap_ms']-results['direct_gap_ms']:.2f} ms"),
        ]
    print("| measurement | rbee | peer | ratio |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
