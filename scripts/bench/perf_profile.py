"""Samples where a proxy's CPU time goes (`perf record -e cpu-clock`: this machine has no
hardware counters, but the timer samples kernel and user code alike) on one wrk or h2load scenario.
Usage: perf_profile.py CORRAL_BINARY SCENARIO SYSTEM [SECONDS]; writes perf-SYSTEM.data here."""

import subprocess
import sys
import time

import bench


def main():
    binary, scenario, system = sys.argv[1], sys.argv[2], sys.argv[3]
    seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    sc = bench.SCENARIOS[scenario]
    work = bench.make_work()
    backends = bench.start_backends(work)
    proxy = {"corral": lambda: bench.Corral(work, {}, binary),
             "haproxy": lambda: bench.HAProxy(work, {}), "nginx": lambda: bench.Nginx(work, {})}[system]()
    proxy.start()
    try:
        # The same load tools as bench.py: wrk, or h2load for the h2 scenario.
        load = {"wrk": lambda s: bench.run_wrk(sc, s),
                "h2load": lambda s: bench.run_h2load(sc, s, work)}[sc["tool"]]
        load(1)
        pids = ",".join(str(p) for p in [proxy.pid()] + bench.children_of(proxy.pid()))
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "4999", "-g", "-p", pids,
                                "-o", f"perf-{system}.data"], stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        r = load(seconds)
        rec.send_signal(2)
        rec.wait(timeout=60)
        print(f"{system}: {r['requests']} requests, {r['rps']:.0f} req/s")
    finally:
        proxy.stop()
        backends.terminate()
        backends.wait()


if __name__ == "__main__":
    main()
