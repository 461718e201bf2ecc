"""What history costs the server's loop: add() for each broadcast of a turn
and one commit() per turn, at the default limit (so every commit also
trims), on a real file.  A benchmark, not a test:

    python bench/history.py [--dir DIR] [--seconds S] [--runs R]

The file goes in a temporary folder in DIR (default: the working directory,
where the server keeps its history).  Each run measures every turn size in
turn, so that the machine's noise falls on all of them alike; the figures
are medians over the runs.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

# The programs live at the top level, beside tests/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from chat_history import DEFAULT_LIMIT, HistoryStore  # noqa: E402

TURN_SIZES = (1, 10, 100)
MESSAGE = "a typical line of chat, forty bytes long"


def measure_turns(path, broadcasts_per_turn, seconds):
    """(sorted durations of add() * n + commit() turns, CPU seconds they
    used), on a history already at its limit."""
    with HistoryStore(path) as store:
        for _ in range(DEFAULT_LIMIT):
            store.add("Teacher", MESSAGE)
        store.commit()
        durations = []
        clock = time.perf_counter
        stop = clock() + seconds
        cpu_start = time.process_time()
        while clock() < stop:
            start = clock()
            for _ in range(broadcasts_per_turn):
                store.add("Teacher", MESSAGE)
            store.commit()
            durations.append(clock() - start)
        cpu = time.process_time() - cpu_start
    return sorted(durations), cpu


def measure_last(path, count=100, repeats=2000):
    """Seconds for one last(count), the work of one HISTORY command."""
    with HistoryStore(path) as store:
        start = time.perf_counter()
        for _ in range(repeats):
            store.last(count)
        return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=".")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    results = {size: [] for size in TURN_SIZES}
    with tempfile.TemporaryDirectory(dir=arguments.dir) as folder:
        for run in range(arguments.runs):
            for size in TURN_SIZES:
                path = os.path.join(folder, f"run{run}-{size}.sqlite3")
                results[size].append(
                    measure_turns(path, size, arguments.seconds))
        last_seconds = measure_last(path)  # the last file: at the limit
    print(f"history at its limit of {DEFAULT_LIMIT} broadcasts, "
          f"{len(MESSAGE)}-byte messages, {arguments.runs} runs of "
          f"{arguments.seconds:g} s per turn size; medians over the runs")
    print("Cost per broadcast: the total time (CPU time) over the "
          "broadcasts, trims and checkpoints included.")
    print("broadcasts | cost per broadcast | one turn: median  p99     "
          "longest | turns over")
    print("per turn   | time     CPU time  |                           "
          "        | 1 ms")
    for size in TURN_SIZES:
        runs = [turns for turns, _ in results[size]]

        def median_of(statistic):
            return statistics.median(statistic(turns) for turns in runs)

        cost = median_of(lambda turns: sum(turns) / len(turns) / size)
        cpu = statistics.median(cpu / len(turns) / size
                                for turns, cpu in results[size])
        median = median_of(lambda turns: turns[len(turns) // 2])
        p99 = median_of(lambda turns: turns[int(len(turns) * 0.99)])
        longest = max(turns[-1] for turns in runs)
        slow = median_of(lambda turns: sum(
            duration > 0.001 for duration in turns) / len(turns))
        print(f"{size:>10} | {cost * 1e6:5.1f} µs  {cpu * 1e6:5.1f} µs  | "
              f"{median * 1e6:14.1f} µs {p99 * 1e6:6.0f} µs "
              f"{longest * 1e3:5.1f} ms | {slow:.2%}")
    print(f"last(100), one HISTORY command: {last_seconds * 1e6:.0f} µs")


if __name__ == "__main__":
    main()
