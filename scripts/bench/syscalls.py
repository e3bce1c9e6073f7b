"""Counts a proxy's system calls per request (`strace -c -f`) on one wrk or h2load scenario, for
each system given: the bench's backends and configs, strace attached for a few seconds of load.
Usage: syscalls.py CORRAL_BINARY SCENARIO SYSTEM... (e.g. h1-close corral nginx haproxy)"""

import re
import subprocess
import sys
import time

import bench


def count(proxy, sc, seconds=4):
    if sc["tool"] == "h2load":
        def load(s):
            return bench.run_h2load(sc, s, proxy.work)
    else:
        def load(s):
            return bench.run_wrk(sc, s)
    proxy.start()
    try:
        load(1)  # warm up (pools, caches)
        pids = [proxy.pid()] + bench.children_of(proxy.pid())
        strace = subprocess.Popen(["strace", "-c", "-f", "-o", str(proxy.work / "strace.txt")]
                                  + [a for p in pids for a in ("-p", str(p))],
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        r = load(seconds)
        strace.terminate()
        strace.wait(timeout=30)
        return r["requests"], (proxy.work / "strace.txt").read_text()
    finally:
        proxy.stop()


def main():
    binary, scenario, systems = sys.argv[1], sys.argv[2], sys.argv[3:]
    sc = bench.SCENARIOS[scenario]
    work = bench.make_work()
    backends = bench.start_backends(work)
    classes = {"corral": lambda: bench.Corral(work, {}, binary),
               "haproxy": lambda: bench.HAProxy(work, {}), "nginx": lambda: bench.Nginx(work, {})}
    try:
        for name in systems:
            requests, table = count(classes[name](), sc)
            print(f"== {name}: {requests} requests (strace slows every call: compare counts)")
            for line in table.splitlines():
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
                if m and m.group(2) != "total":
                    print(f"   {m.group(2):16} {int(m.group(1)) / max(requests, 1):6.2f} per request")
    finally:
        backends.terminate()
        backends.wait()


if __name__ == "__main__":
    main()
