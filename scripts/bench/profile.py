"""Profiles corral on one scenario: the bench's backends and config, corral under
`valgrind --tool=callgrind` (perf has no hardware counters on this machine), wrk for a few
seconds (h2load, 10 connections × 10 streams, when the URL starts with `h2:`: `h2:https://...`).
Usage: profile.py CORRAL_BINARY OUT_FILE [SECONDS] [URL] [wrk args...]"""

import subprocess
import sys
import time

import bench


def main():
    binary, out = sys.argv[1], sys.argv[2]
    seconds = sys.argv[3] if len(sys.argv) > 3 else "5"
    url = sys.argv[4] if len(sys.argv) > 4 else f"http://127.0.0.1:{bench.HTTP_PORT}/100b"
    extra = sys.argv[5:]
    work = bench.make_work()
    backends = bench.start_backends(work)
    corral = bench.Corral(work, {}, binary)
    corral.write_config(0)
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
    proc = subprocess.Popen(["taskset", "-c", bench.PROXY_CPU] + cmd + corral.command(),
                            env=corral.env(), stderr=open(work / "valgrind.log", "w"))
    try:
        bench.wait_port(bench.HTTP_PORT, proc, timeout=120)
        if url.startswith("h2:"):
            load = ["h2load", "-c10", "-m10", "-D", seconds] + extra + [url[3:]]
        else:
            load = ["wrk", "-t1", "-c8", f"-d{seconds}s"] + extra + [url]
        print(subprocess.run(["taskset", "-c", bench.LOAD_CPU] + load,
                             capture_output=True, text=True).stdout)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        backends.terminate()
        backends.wait()
        time.sleep(0.2)


if __name__ == "__main__":
    main()
