"""Measure chat servers with the load generator, in alternated rounds.

    python bench/compare.py [--rounds 7] [--only NAME,NAME] BEFORE [AFTER]

BEFORE and AFTER are checkouts of this project (folders holding
chat_server.py).  For each round and each measurement, each server is
started fresh, pinned to core 1 (the load generator to core 0), measured
once, and stopped; the order of the two alternates from round to round.
The table gives each side's median and the median of the same-round
ratios AFTER / BEFORE, which the machine's noise disturbs least.  With one
checkout, its medians alone.  Then, for each checkout, the same-round
ratios that are targets of their own: registration with the log on and
off, broadcasting with the history on and off.  Linux only (taskset,
/proc); builds bench/loadgen.c with gcc.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOADGEN_SOURCE = os.path.join(HERE, "loadgen.c")

# name: (load generator arguments, the RESULT values to report, and the
# server arguments that the measurement adds; "{new}" marks arguments that
# only the servers of this round's design know, left out for an old one).
MEASUREMENTS = {
    "throughput": (["--mode", "throughput"], ["msgs_per_s"], []),
    "latency": (["--mode", "latency", "-r", "20000"],
                ["p50_us", "p90_us", "lost"], []),
    "connections": (["--mode", "connections", "-n", "10000"],
                    ["reg_s", "peak_rss_kb"], []),
    "connections-quiet": (["--mode", "connections", "-n", "10000"],
                          ["reg_s", "peak_rss_kb"], ["{new}-q"]),
    "throughput-2digit": (["--mode", "throughput", "--header-width", "2"],
                          ["msgs_per_s"], []),
    "latency-2digit": (["--mode", "latency", "-r", "20000",
                        "--header-width", "2"],
                       ["p50_us", "p90_us", "lost"], []),
    "broadcast": (["--mode", "broadcast"], ["deliveries_per_s", "lost"], []),
    "broadcast-no-history": (["--mode", "broadcast"],
                             ["deliveries_per_s", "lost"],
                             ["{new}--no-history"]),
}

# Two measurements of one checkout whose same-round ratio is a target:
# (name, the measurement, the one it is compared with, the value).
SAME_ROUND_RATIOS = [
    ("logging on / off", "connections", "connections-quiet", "reg_s"),
    ("history on / off", "broadcast", "broadcast-no-history",
     "deliveries_per_s"),
]


def build_loadgen(directory):
    binary = os.path.join(directory, "loadgen")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", binary, LOADGEN_SOURCE],
                   check=True)
    return binary


def is_new(checkout):
    """Whether a checkout's server knows this round's options."""
    with open(os.path.join(checkout, "chat_server.py")) as source:
        return "--length-field" in source.read()


def free_port():
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure_once(loadgen, checkout, measurement, workdir):
    """Start a server from ``checkout``, run one measurement, stop it;
    return the RESULT values (and the server's peak RSS)."""
    load_arguments, _, server_arguments = MEASUREMENTS[measurement]
    new = is_new(checkout)
    extra = [argument.replace("{new}", "") for argument in server_arguments
             if new or not argument.startswith("{new}")]
    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable,
         os.path.join(checkout, "chat_server.py"), "--port", str(port),
         *extra], cwd=workdir, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        result = subprocess.run(
            ["taskset", "-c", "0", loadgen, "--port", str(port),
             "--server-pid", str(server.pid), *load_arguments],
            capture_output=True, text=True, timeout=300)
        with open(f"/proc/{server.pid}/status") as status:
            peak = re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    line = [line for line in result.stdout.splitlines()
            if line.startswith("RESULT ")][-1]
    values = dict(pair.split("=", 1) for pair in line.split()[1:])
    values["peak_rss_kb"] = peak
    if values.get("ok") != "1":
        print(f"  warning: {measurement} not ok: {line}", file=sys.stderr)
    return values


def measurement_names(text):
    """argparse type: names of MEASUREMENTS, comma-separated."""
    names = text.split(",")
    unknown = [name for name in names if name not in MEASUREMENTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"no measurement {unknown[0]!r}")
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", nargs="+", metavar="CHECKOUT")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", type=measurement_names,
                        default=list(MEASUREMENTS),
                        help="comma-separated, of: " + ", ".join(MEASUREMENTS))
    arguments = parser.parse_args()
    checkouts = [os.path.abspath(path) for path in arguments.checkouts]
    workdir = tempfile.mkdtemp(prefix="chat_bench_")
    try:
        loadgen = build_loadgen(workdir)
        # results[measurement][side] = list (one per round) of RESULT dicts
        results = {name: [[] for _ in checkouts] for name in arguments.only}
        for round_number in range(arguments.rounds):
            for name in arguments.only:
                sides = list(range(len(checkouts)))
                if round_number % 2:
                    sides.reverse()
                for side in sides:
                    values = measure_once(loadgen, checkouts[side], name,
                                          workdir)
                    results[name][side].append(values)
            print(f"round {round_number + 1} of {arguments.rounds} done",
                  file=sys.stderr)
        report(results, checkouts)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(results, checkouts):
    print(f"# medians over {len(next(iter(results.values()))[0])} rounds; "
          + "; ".join(f"side {index}: {path}"
                      for index, path in enumerate(checkouts)))
    for name, sides in results.items():
        for key in MEASUREMENTS[name][1]:
            # A checkout that cannot do a measurement (an old server and a
            # 2-digit load) has no value there: "-".
            columns = [[float(values[key]) for values in side
                        if values.get("ok") == "1" and key in values]
                       for side in sides]
            line = f"{name:22} {key:17}" + "".join(
                f" {statistics.median(column):14,.1f}" if column
                else f" {'-':>14}" for column in columns)
            if len(sides) == 2:
                ratios = [float(after[key]) / float(before[key])
                          for before, after in zip(*sides)
                          if before.get("ok") == after.get("ok") == "1"
                          and float(before[key])]
                if ratios:
                    line += f"   ratio {statistics.median(ratios):.2f}"
            print(line)
    for title, name, other, key in SAME_ROUND_RATIOS:
        if name not in results or other not in results:
            continue
        line = f"{title:40}"
        for measured, compared in zip(results[name], results[other]):
            ratios = [float(a[key]) / float(b[key])
                      for a, b in zip(measured, compared)
                      if a.get("ok") == b.get("ok") == "1" and float(b[key])]
            line += (f" {statistics.median(ratios):14.2f}" if ratios
                     else f" {'-':>14}")
        print(line + "   (medians of same-round ratios)")


if __name__ == "__main__":
    main()
