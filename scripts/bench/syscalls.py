"""Counts a proxy's system calls per request on one wrk or h2load scenario, for each system
given: the bench's backends and configs, the counters attached for a few seconds of load.
Usage: syscalls.py CORRAL_BINARY SCENARIO SYSTEM... (e.g. h1-close corral nginx haproxy)

Counted with `perf stat` on the kernel's syscall tracepoints, which leave the proxy at full
speed. `strace -c` (the fallback where perf cannot count) slows every call by an order of
magnitude, so the proxy batches more per wake-up and calls that only happen at speed vanish:
under strace corral showed 1.06 accept4 per connection, under perf 1.93 (a failed accept after
nearly every connection, since fixed)."""

import re
import shutil
import subprocess
import sys
import time

import bench

CALLS = ["accept4", "ppoll", "poll", "epoll_wait", "epoll_ctl", "recvfrom", "sendto", "read",
         "write", "readv", "writev", "recvmsg", "sendmsg", "close", "shutdown", "connect",
         "socket", "setsockopt", "getsockopt", "getsockname", "fcntl", "ioctl", "futex",
         "clock_gettime", "sendfile64", "splice", "timerfd_settime", "timer_settime"]


def perf_usable():
    if not shutil.which("perf"):
        return False
    probe = subprocess.run(["perf", "stat", "-e", "syscalls:sys_enter_getpid", "true"],
                           capture_output=True, text=True)
    return probe.returncode == 0


def attach(pids, out, use_perf):
    if use_perf:
        events = ",".join(f"syscalls:sys_enter_{c}" for c in CALLS)
        cmd = ["perf", "stat", "-x", ",", "-o", str(out), "-e", events,
               "-p", ",".join(map(str, pids))]
    else:
        cmd = ["strace", "-c", "-f", "-o", str(out)] + [a for p in pids for a in ("-p", str(p))]
    return subprocess.Popen(cmd, stderr=subprocess.DEVNULL)


def parse(text, use_perf):
    counts = {}
    for line in text.splitlines():
        if use_perf:
            fields = line.split(",")
            if len(fields) > 2 and fields[0].isdigit():
                counts[fields[2].removeprefix("syscalls:sys_enter_")] = int(fields[0])
        else:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
            if m and m.group(2) != "total":
                counts[m.group(2)] = int(m.group(1))
    return counts


def count(proxy, sc, use_perf, seconds=4):
    if sc["tool"] == "h2load":
        def load(s):
            return bench.run_h2load(sc, s, proxy.work)
    else:
        def load(s):
            return bench.run_wrk(sc, s)
    proxy.start()
    try:
        load(1)  # warm up (pools, caches)
        out = proxy.work / "syscalls.txt"
        counter = attach([proxy.pid()] + bench.children_of(proxy.pid()), out, use_perf)
        time.sleep(0.5)
        r = load(seconds)
        counter.send_signal(2)  # perf and strace both print their counts on SIGINT
        counter.wait(timeout=30)
        return r["requests"], parse(out.read_text(), use_perf)
    finally:
        proxy.stop()


def main():
    binary, scenario, systems = sys.argv[1], sys.argv[2], sys.argv[3:]
    sc = bench.SCENARIOS[scenario]
    use_perf = perf_usable()
    work = bench.make_work()
    backends = bench.start_backends(work)
    classes = {"corral": lambda: bench.Corral(work, {}, binary),
               "haproxy": lambda: bench.HAProxy(work, {}), "nginx": lambda: bench.Nginx(work, {})}
    try:
        for name in systems:
            requests, counts = count(classes[name](), sc, use_perf)
            how = "perf stat" if use_perf else "strace -c, which slows every call: compare counts"
            print(f"== {name}: {requests} requests ({how})")
            for call, n in sorted(counts.items(), key=lambda kv: -kv[1]):
                if n:
                    print(f"   {call:16} {n / max(requests, 1):6.2f} per request")
    finally:
        backends.terminate()
        backends.wait()


if __name__ == "__main__":
    main()
