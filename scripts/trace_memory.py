"""Where a nascli command's memory peaks: its high-water mark over time, with the code running at each rise.

Runs ``nascli ARGS...`` in this process. A thread reads the process's ``VmHWM`` (peak resident set)
and ``VmRSS`` from /proc every 20 ms; whenever the peak has risen by ``--step`` MB since the last
record, it prints the time, both figures and the innermost frames of the main thread's stack.
Sampling misses nothing that raises the peak, unlike polling the resident set, which misses a
short spike (a loss's float32 temporaries, a copy freed a moment later). Linux only.

    python scripts/trace_memory.py [--step 40] [--frames 6] -- finetune runs/x/search.pt finetune.lora.rank=16
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import traceback


def _memory_mb() -> tuple[int, int]:
    """(VmHWM, VmRSS) of this process in MB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmHWM", "VmRSS")):
                values[line.split(":")[0]] = int(line.split()[1]) // 1024
    return values["VmHWM"], values["VmRSS"]


def _where(frame: object, frames: int) -> list[str]:
    """The innermost ``frames`` frames of a stack, as short file:line function lines."""
    lines = []
    for entry in traceback.extract_stack(frame)[-frames:]:
        short = entry.filename.split("site-packages/")[-1]
        lines.append(f"{short}:{entry.lineno} {entry.name}")
    return lines


def _sample(main: int, step: int, frames: int, start: float) -> None:
    last = 0
    while True:
        peak, resident = _memory_mb()
        if peak >= last + step:
            stack = _where(sys._current_frames().get(main), frames)
            print(f"{time.perf_counter() - start:8.1f} s  peak {peak} MB  resident {resident} MB", file=sys.stderr)
            print("    " + "\n    ".join(stack), file=sys.stderr, flush=True)
            last = peak
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=40, help="MB the peak must rise by to be recorded")
    parser.add_argument("--frames", type=int, default=6, help="innermost stack frames printed per record")
    parser.add_argument("nascli_args", nargs=argparse.REMAINDER, help="the nascli command, after --")
    args = parser.parse_args()
    command = args.nascli_args[1:] if args.nascli_args[:1] == ["--"] else args.nascli_args
    start = time.perf_counter()
    threading.Thread(target=_sample, args=(threading.get_ident(), args.step, args.frames, start), daemon=True).start()
    from nascli.cli.app import app

    sys.argv = ["nascli", *command]
    try:
        app()
    finally:
        peak, _ = _memory_mb()
        print(f"{time.perf_counter() - start:8.1f} s  end, peak {peak} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
