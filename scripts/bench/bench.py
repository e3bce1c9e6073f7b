"""Drives the side-by-side benchmark: backends, one proxy at a time, load, /proc accounting.

Started by scripts/bench.sh (which installs the tools and builds corral). Standard library
only, except matplotlib for the chart.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

PROXY_CPU = "1"
LOAD_CPU = "0"
BACKEND_PORTS = [28101, 28102, 28103, 28104]
HTTP_PORT, HTTPS_PORT, TCP_PORT, CONTROL_PORT = 28200, 28201, 28202, 28290
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

SYSTEMS = ["haproxy", "nginx", "corral"]

# name: (tool, url path/port, options). "reload" scenarios swap the table every 100 ms.
SCENARIOS = {
    "h1-ka-100": dict(tool="wrk", url=f"http://127.0.0.1:{HTTP_PORT}/100b", conns=32),
    "h1-ka-16k": dict(tool="wrk", url=f"http://127.0.0.1:{HTTP_PORT}/16k", conns=32),
    "h1-close": dict(tool="wrk", url=f"http://127.0.0.1:{HTTP_PORT}/100b", conns=16, close=True),
    "h1-ka-100-log": dict(tool="wrk", url=f"http://127.0.0.1:{HTTP_PORT}/100b", conns=32, log=True),
    # Clients that send back the cookie they were given (HAProxy `cookie SRV insert indirect
    # nocache`; nginx has no cookie insertion outside nginx Plus: `hash $cookie_SRV`).
    "h1-sticky": dict(tool="wrk", url=f"http://127.0.0.1:{HTTP_PORT}/100b", conns=32, sticky=True),
    "tls-ka": dict(tool="wrk", url=f"https://127.0.0.1:{HTTPS_PORT}/100b", conns=32),
    "tls-full": dict(tool="ab", url=f"https://127.0.0.1:{HTTPS_PORT}/100b", conns=16),
    # wrk resumes no TLS 1.3 session (measured: full handshakes), hence a client of our own.
    "tls-resumed": dict(tool="resume", port=HTTPS_PORT, path="/100b", conns=8),
    "h2-tls": dict(tool="h2load", url=f"https://127.0.0.1:{HTTPS_PORT}/100b", conns=10, streams=10),
    "tcp": dict(tool="wrk", url=f"http://127.0.0.1:{TCP_PORT}/100b", conns=32),
    "reload-ka": dict(tool="wrk", url=f"http://127.0.0.1:{HTTP_PORT}/100b", conns=32, reload=True),
    "reload-close": dict(
        tool="wrk", url=f"http://127.0.0.1:{HTTP_PORT}/100b", conns=16, close=True, reload=True
    ),
    "idle-9k": dict(tool="idle", conns=9_000),
}
# Scenario whose figures without reloads are the baseline of a reload scenario.
RELOAD_BASE = {"reload-ka": "h1-ka-100", "reload-close": "h1-close"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def loadavg():
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_quiet(limit=1.5, poll=30, budget=600):
    """Polls the 1-minute load average until it is below `limit`; gives up after `budget`."""
    deadline = time.time() + budget
    while True:
        la = loadavg()
        if la <= limit:
            return la, True
        if time.time() >= deadline:
            return la, False
        log(f"load average {la:.2f} > {limit}: waiting ({int(deadline - time.time())} s left)")
        time.sleep(poll)


# ---------------------------------------------------------------- /proc accounting


def children_of(pid):
    """Every live descendant of `pid`."""
    kids = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(fields[1]), []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def stat_fields(pid):
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_ticks(root):
    """user+sys of `root` and its live descendants, plus what its reaped children used."""
    total = 0
    try:
        f = stat_fields(root)
        # Fields after the ")" start at state (3): utime=14, stime=15, cutime=16, cstime=17.
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    except OSError:
        return None
    for c in children_of(root):
        try:
            f = stat_fields(c)
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total


def rss_kib(root):
    total = 0
    for p in [root] + children_of(root):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE // 1024
        except OSError:
            pass
    return total


# ---------------------------------------------------------------- setup


def write(path, text):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_work():
    work = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    os.chmod(work, 0o755)
    www = work / "www"
    www.mkdir()
    (www / "100b").write_bytes(b"x" * 99 + b"\n")
    (www / "16k").write_bytes((b"y" * 1023 + b"\n") * 16)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=bench.example.com", "-addext", "subjectAltName=DNS:bench.example.com",
         "-keyout", str(work / "key.pem"), "-out", str(work / "cert.pem")],
        check=True, capture_output=True,
    )
    (work / "both.pem").write_text((work / "cert.pem").read_text() + (work / "key.pem").read_text())
    return work


def wait_port(port, proc=None, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def start_backends(work):
    servers = "\n".join(
        f"""  server {{ listen 127.0.0.1:{p} reuseport backlog=4096; root {work}/www;
             location / {{ }} }}"""
        for p in BACKEND_PORTS
    )
    conf = work / "backends.conf"
    conf.write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {work}/backends.pid;
error_log {work}/backends-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  default_type application/octet-stream;
  sendfile on; tcp_nodelay on;
{servers}
}}
""")
    proc = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, "nginx", "-c", str(conf), "-p", str(work)],
        stdout=subprocess.DEVNULL, stderr=open(work / "backends.out", "w"),
    )
    for p in BACKEND_PORTS:
        wait_port(p, proc)
    return proc


# ---------------------------------------------------------------- the three proxies


class Proxy:
    name = ""

    def __init__(self, work, opts):
        self.work, self.opts = work, opts
        self.proc = None
        self.variant = 0

    def pid(self):
        return self.proc.pid

    def start(self):
        self.write_config(0)
        self.proc = subprocess.Popen(
            ["taskset", "-c", PROXY_CPU] + self.command(),
            stdout=open(self.work / f"{self.name}.out", "a"),
            stderr=subprocess.STDOUT if not self.opts.get("log") else open(self.work / f"{self.name}.log", "a"),
            env=self.env(),
        )
        for p in (HTTP_PORT, HTTPS_PORT, TCP_PORT):
            wait_port(p, self.proc)

    def env(self):
        return dict(os.environ)

    def reload(self):
        """Swaps between two tables whose weights differ, so every reload changes something."""
        self.variant ^= 1
        self.write_config(self.variant)
        self.signal_reload()

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                for c in children_of(self.proc.pid):
                    try:
                        os.kill(c, signal.SIGKILL)
                    except OSError:
                        pass
                self.proc.kill()
                self.proc.wait()
        # Ports of a killed process may linger a moment in TIME_WAIT; SO_REUSEADDR copes.
        self.proc = None


def weights(variant):
    """Per backend weight in the two alternating tables."""
    return [2, 1, 1, 1] if variant else [1, 1, 1, 1]


class Corral(Proxy):
    name = "corral"

    def __init__(self, work, opts, binary):
        super().__init__(work, opts)
        self.binary = binary
        self.data = Path(tempfile.mkdtemp(prefix="data-", dir=work))

    def config_path(self):
        return self.work / "corral.json"

    def write_config(self, variant):
        w = weights(variant)
        services = [
            {"ID": f"web-{i + 1}", "Service": "web", "Address": "127.0.0.1", "Port": p,
             "Weights": {"Passing": w[i], "Warning": 1}}
            for i, p in enumerate(BACKEND_PORTS)
        ]
        rules = [
            {"sourcePort": HTTP_PORT, "protocol": "http", "serviceId": "web"},
            {"sourcePort": HTTPS_PORT, "protocol": "https", "serviceId": "web"},
            {"sourcePort": TCP_PORT, "protocol": "tcp", "serviceId": "web"},
        ]
        config = {
            "loadBalancers": [{"name": "bench", "lbConfig": {
                "portRules": rules, "defaultCertificateId": "bench",
                **({"stickinessPolicy": {"cookie": "SRV", "mode": "insert", "indirect": True,
                                         "nocache": True}} if self.opts.get("sticky") else {})}}],
            "services": services,
            "certificates": [{"id": "bench", "certPath": str(self.work / "cert.pem"),
                              "keyPath": str(self.work / "key.pem")}],
            "limits": {"upstreamIdlePerTarget": 64, "maxConnectionsPerListener": 30000},
        }
        write(self.config_path(), json.dumps(config, indent=1))

    def command(self):
        return [str(self.binary), "--worker-threads", "1", "--config", str(self.config_path()),
                "--control-addr", f"127.0.0.1:{CONTROL_PORT}", "--listen-ip", "127.0.0.1",
                "--data-dir", str(self.data)]

    def env(self):
        env = dict(os.environ)
        # The access log is corral's only per-request log line: off unless the scenario logs.
        env["RUST_LOG"] = "info" if self.opts.get("log") else "warn"
        return env

    def signal_reload(self):
        self.proc.send_signal(signal.SIGHUP)

    def stop(self):
        super().stop()
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir()


class HAProxy(Proxy):
    name = "haproxy"

    def write_config(self, variant):
        w = weights(variant)
        servers = "\n".join(
            f"  server w{i + 1} 127.0.0.1:{p} weight {w[i]}" for i, p in enumerate(BACKEND_PORTS)
        )
        sticky = self.opts.get("sticky")
        http_servers = "\n".join(
            f"  server w{i + 1} 127.0.0.1:{p} weight {w[i]}" + (f" cookie w{i + 1}" if sticky else "")
            for i, p in enumerate(BACKEND_PORTS)
        )
        logging = self.opts.get("log")
        write(self.work / "haproxy.cfg", f"""
global
  nbthread 1
  maxconn 9800
  {"log stdout format raw local0" if logging else ""}
defaults
  mode http
  {"log global" if logging else ""}
  {"option httplog" if logging else ""}
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
  timeout http-keep-alive 60s
frontend h1
  bind 127.0.0.1:{HTTP_PORT}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Port %[dst_port]
  default_backend web
frontend tls
  bind 127.0.0.1:{HTTPS_PORT} ssl crt {self.work}/both.pem alpn h2,http/1.1
  option forwardfor
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Forwarded-Port %[dst_port]
  default_backend web
backend web
  balance roundrobin
  {"cookie SRV insert indirect nocache" if sticky else ""}
{http_servers}
listen tcp
  mode tcp
  {"option tcplog" if logging else ""}
  bind 127.0.0.1:{TCP_PORT}
  balance roundrobin
{servers}
""")

    def command(self):
        # Master-worker: SIGUSR2 to the master forks a new worker; the old one finishes.
        return ["haproxy", "-W", "-db", "-f", str(self.work / "haproxy.cfg")]

    def signal_reload(self):
        self.proc.send_signal(signal.SIGUSR2)


class Nginx(Proxy):
    name = "nginx"

    def write_config(self, variant):
        w = weights(variant)
        servers = "\n".join(f"    server 127.0.0.1:{p} weight={w[i]};" for i, p in enumerate(BACKEND_PORTS))
        access = f"access_log {self.work}/nginx-access.log;" if self.opts.get("log") else "access_log off;"
        location = """location / {
        proxy_pass http://web;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Port $server_port;
        proxy_buffering on;
      }"""
        write(self.work / "nginx-proxy.conf", f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
user root;
worker_processes 1;
daemon off;
pid {self.work}/nginx-proxy.pid;
error_log {self.work}/nginx-proxy-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 19000; }}
http {{
  {access}
  keepalive_requests 10000000;
  keepalive_timeout 60s;
  upstream web {{
    {"hash $cookie_SRV consistent;" if self.opts.get("sticky") else ""}
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{HTTP_PORT} backlog=4096;
    {location}
  }}
  server {{
    listen 127.0.0.1:{HTTPS_PORT} ssl http2 backlog=4096;
    ssl_certificate {self.work}/cert.pem;
    ssl_certificate_key {self.work}/key.pem;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    {location}
  }}
}}
stream {{
  upstream tcpweb {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{TCP_PORT} backlog=4096;
    proxy_pass tcpweb;
  }}
}}
""")

    def command(self):
        return ["nginx", "-c", str(self.work / "nginx-proxy.conf"), "-p", str(self.work)]

    def signal_reload(self):
        self.proc.send_signal(signal.SIGHUP)


# ---------------------------------------------------------------- load generators


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(sc, seconds):
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{sc['conns']}", f"-d{seconds}s", "--latency",
           "--timeout", "5s"]
    if sc.get("close"):
        cmd += ["-H", "Connection: close"]
    for header in sc.get("headers", []):
        cmd += ["-H", header]
    out = subprocess.run(cmd + [sc["url"]], capture_output=True, text=True, timeout=seconds + 30).stdout
    r = {"raw": out}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        r[f"p{q}_ms"] = to_ms(*m.groups()) if m else None
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    r["errors"] = errors
    return r


def run_ab(sc, seconds):
    cmd = ["taskset", "-c", LOAD_CPU, "ab", "-q", "-c", str(sc["conns"]), "-t", str(seconds),
           "-n", "10000000", "-s", "5", sc["url"]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    r = {"raw": out}
    m = re.search(r"Complete requests:\s+(\d+)", out)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests per second:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+(\d+)", out, re.M)
        r[f"p{q}_ms"] = float(m.group(1)) if m else None
    errors = 0
    m = re.search(r"Failed requests:\s+(\d+)", out)
    errors += int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx responses:\s+(\d+)", out)
    errors += int(m.group(1)) if m else 0
    r["errors"] = errors
    # ab counts requests whose length differs from the first as failed; none here (fixed body).
    return r


def run_h2load(sc, seconds, work):
    logf = work / "h2load.log"
    if logf.exists():
        logf.unlink()
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", "-c", str(sc["conns"]), "-m", str(sc["streams"]),
           "-D", str(seconds), "--log-file", str(logf), sc["url"]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    r = {"raw": out}
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    r["requests"] = int(m.group(4)) if m else 0
    r["errors"] = (int(m.group(5)) + int(m.group(6)) + int(m.group(7))) if m else 0
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    lat = []
    if logf.exists():
        for line in logf.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]) / 1000.0)  # µs → ms
    lat.sort()
    for q in (50, 99):
        r[f"p{q}_ms"] = lat[min(len(lat) - 1, len(lat) * q // 100)] if lat else None
    m = re.search(r"Application protocol: (\S+)", out)
    r["alpn"] = m.group(1) if m else None
    return r


def run_resume(sc, seconds):
    cmd = ["taskset", "-c", LOAD_CPU, sys.executable, str(HERE / "tls_resume.py"), str(sc["port"]),
           sc["path"], str(seconds), str(sc["conns"])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    r = json.loads(out)
    r["raw"] = out
    return r


async def hold_idle(n, port):
    """Opens `n` keep-alive connections, one request each, and holds them open."""
    sem = asyncio.Semaphore(500)
    conns, errors = [], 0

    async def one():
        nonlocal errors
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                writer.write(b"GET /100b HTTP/1.1\r\nHost: bench\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
                await asyncio.wait_for(reader.readexactly(length), 10)
                conns.append(writer)
            except Exception:
                errors += 1

    await asyncio.gather(*(one() for _ in range(n)))
    return conns, errors


def run_idle(sc, proxy):
    loop = asyncio.new_event_loop()
    t0 = time.time()
    conns, errors = loop.run_until_complete(hold_idle(sc["conns"], HTTP_PORT))
    time.sleep(1.0)
    rss = rss_kib(proxy.pid())
    for w in conns:
        w.close()
    loop.run_until_complete(asyncio.sleep(0.2))
    loop.close()
    return {"requests": len(conns), "rps": 0.0, "p50_ms": None, "p99_ms": None, "errors": errors,
            "rss_idle_kib": rss, "open_s": time.time() - t0}


def sticky_cookie(url):
    """The cookie a first request is given (nginx gives none: any value hashes to a target)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        set_cookie = response.headers.get("Set-Cookie")
    return set_cookie.split(";")[0] if set_cookie else "SRV=w1"


# ---------------------------------------------------------------- one measured run


def measure(system, name, sc, seconds, args, work):
    opts = {"log": sc.get("log", False), "sticky": sc.get("sticky", False)}
    if system in args.extra:
        proxy = Corral(work, opts, args.extra[system])
    else:
        proxy = {"corral": lambda: Corral(work, opts, args.corral), "haproxy": lambda: HAProxy(work, opts),
                 "nginx": lambda: Nginx(work, opts)}[system]()
    proxy.start()
    try:
        if sc["tool"] == "idle":
            return run_idle(sc, proxy)
        if sc.get("sticky"):
            sc = dict(sc, headers=[f"Cookie: {sticky_cookie(sc['url'])}"])
        # Warm-up: fills the upstream pools and the TLS session caches.
        warm = dict(sc)
        if sc["tool"] == "h2load":
            run_h2load(warm, 1, work)
        elif sc["tool"] == "resume":
            run_resume(warm, 1)
        elif sc["tool"] == "ab":
            run_ab(warm, 1)
        else:
            run_wrk(warm, 1)
        stop = threading.Event()
        reloads = [0]

        def reloader():
            while not stop.wait(0.1):
                proxy.reload()
                reloads[0] += 1

        la = loadavg()
        before = cpu_ticks(proxy.pid())
        thread = None
        if sc.get("reload"):
            thread = threading.Thread(target=reloader, daemon=True)
            thread.start()
        if sc["tool"] == "wrk":
            r = run_wrk(sc, seconds)
        elif sc["tool"] == "ab":
            r = run_ab(sc, seconds)
        elif sc["tool"] == "resume":
            r = run_resume(sc, seconds)
        else:
            r = run_h2load(sc, seconds, work)
        stop.set()
        if thread:
            thread.join()
        after = cpu_ticks(proxy.pid())
        r["rss_kib"] = rss_kib(proxy.pid())
        r["reloads"] = reloads[0]
        r["load_avg"] = la
        r["cpu_s"] = (after - before) / CLK_TCK if before is not None and after is not None else None
        r["cpu_us_per_req"] = (r["cpu_s"] * 1e6 / r["requests"]) if r["requests"] and r["cpu_s"] is not None else None
        r["alive"] = proxy.proc.poll() is None
        return r
    finally:
        proxy.stop()
        time.sleep(0.3)


# ---------------------------------------------------------------- report


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarise(runs, systems, scenarios):
    summary = {}
    for sc in scenarios:
        summary[sc] = {}
        for sy in systems:
            rs = [r for r in runs if r["scenario"] == sc and r["system"] == sy]
            if not rs:
                continue
            s = {k: median([r.get(k) for r in rs]) for k in
                 ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "rss_kib", "rss_idle_kib")}
            s["errors"] = median([r.get("errors") for r in rs])
            s["errors_max"] = max(r.get("errors") or 0 for r in rs)
            s["repeats"] = len(rs)
            # Ratios to HAProxy within the same repeat, then the median of those.
            for key in ("rps", "cpu_us_per_req", "p99_ms", "rss_idle_kib"):
                ratios = []
                for r in rs:
                    base = next((b for b in runs if b["scenario"] == sc and b["system"] == "haproxy"
                                 and b["repeat"] == r["repeat"]), None)
                    if base and base.get(key) and r.get(key) is not None:
                        ratios.append(r[key] / base[key])
                s[f"{key}_vs_haproxy"] = median(ratios)
            if sc in RELOAD_BASE:
                losses = []
                for r in rs:
                    base = next((b for b in runs if b["scenario"] == RELOAD_BASE[sc] and b["system"] == sy
                                 and b["repeat"] == r["repeat"]), None)
                    if base and base.get("rps"):
                        losses.append(1 - r["rps"] / base["rps"])
                s["throughput_loss"] = median(losses)
            summary[sc][sy] = s
    return summary


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def markdown(summary, meta):
    lines = [
        f"Machine: {meta['cpus']} cores; proxy on core {PROXY_CPU}, load generator and backends on core "
        f"{LOAD_CPU}; {meta['seconds']} s per run, {meta['repeats']} repeats, medians; "
        f"load average at start {meta['load_start']:.2f}"
        + ("" if meta["quiet"] else " — **taken under load: figures are noisy**") + ".",
        "",
        "| scenario | system | req/s | p50 ms | p99 ms | errors | CPU µs/req | RSS MiB | req/s ÷ HAProxy | CPU/req ÷ HAProxy | p99 ÷ HAProxy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sc, per in summary.items():
        for sy, s in per.items():
            rss = s.get("rss_idle_kib") or s.get("rss_kib")
            extra = ""
            if s.get("throughput_loss") is not None:
                extra = f" (loss {s['throughput_loss'] * 100:.1f}%)"
            if SCENARIOS[sc]["tool"] == "idle":
                lines.append(f"| {sc} | {sy} | – | – | – | {fmt(s['errors'], '.0f')} | – | "
                             f"{fmt(rss / 1024 if rss else None, '.1f')} | – | – | "
                             f"RSS {fmt(s.get('rss_idle_kib_vs_haproxy'), '.2f')} |")
                continue
            lines.append(
                f"| {sc} | {sy} | {fmt(s['rps'], ',.0f')}{extra} | {fmt(s['p50_ms'], '.2f')} | "
                f"{fmt(s['p99_ms'], '.2f')} | {fmt(s['errors'], '.0f')} | {fmt(s['cpu_us_per_req'], '.1f')} | "
                f"{fmt(rss / 1024 if rss else None, '.1f')} | {fmt(s.get('rps_vs_haproxy'), '.2f')} | "
                f"{fmt(s.get('cpu_us_per_req_vs_haproxy'), '.2f')} | {fmt(s.get('p99_ms_vs_haproxy'), '.2f')} |"
            )
    return "\n".join(lines) + "\n"


def chart(summary, path, meta):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = [s for s in summary if SCENARIOS[s]["tool"] != "idle" and "haproxy" in summary[s]]
    others = [s for s in list(summary[scen[0]]) if s != "haproxy"] if scen else []
    fig, axes = plt.subplots(2, 1, figsize=(12, 7.5), sharex=True)
    width = 0.8 / max(1, len(others))
    colors = {"nginx": "#4c9a2a", "corral": "#c8553d"}
    for ax, key, title in ((axes[0], "cpu_us_per_req_vs_haproxy", "proxy CPU per request ÷ HAProxy (lower is better)"),
                           (axes[1], "rps_vs_haproxy", "req/s ÷ HAProxy (higher is better)")):
        for j, sy in enumerate(others):
            xs = [i + (j - (len(others) - 1) / 2) * width for i in range(len(scen))]
            ys = [(summary[s].get(sy) or {}).get(key) or 0 for s in scen]
            bars = ax.bar(xs, ys, width, label=sy, color=colors.get(sy, "#888888"))
            for b, y in zip(bars, ys):
                if y:
                    ax.text(b.get_x() + b.get_width() / 2, y, f"{y:.2f}", ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="#333", linewidth=1, linestyle="--")
        top = max([(summary[s].get(sy) or {}).get(key) or 0 for s in scen for sy in others] + [1.0])
        ax.set_ylim(0, top * 1.18)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left", ncols=len(others))
    axes[1].set_xticks(range(len(scen)))
    axes[1].set_xticklabels(scen, rotation=30, ha="right", fontsize=8)
    note = "" if meta["quiet"] else " (taken under load)"
    fig.suptitle(f"corral and nginx relative to HAProxy, one core each, medians of {meta['repeats']}×{meta['seconds']} s{note}",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", required=True)
    args = ap.parse_args()
    seconds = int(os.environ.get("BENCH_SECONDS", "10"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    systems = os.environ.get("BENCH_SYSTEMS", ",".join(SYSTEMS)).split(",")
    scenarios = os.environ.get("BENCH_SCENARIOS", ",".join(SCENARIOS)).split(",")
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s}; known: {', '.join(SCENARIOS)}")
    args.corral = str(Path(args.corral).resolve())
    # The driver (its /proc reads, the reloader thread) stays off the proxy's core.
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    # Other corral builds to compare, as systems of their own: BENCH_EXTRA=base=target/corral-baseline
    args.extra = {}
    for item in filter(None, os.environ.get("BENCH_EXTRA", "").split(",")):
        name, path = item.split("=", 1)
        args.extra[name] = str(Path(path).resolve())
        if name not in systems:
            systems.append(name)

    if os.environ.get("BENCH_NO_WAIT"):
        la, quiet = loadavg(), loadavg() <= 1.5
    else:
        la, quiet = wait_quiet()
    log(f"load average {la:.2f}: {'quiet' if quiet else 'still loaded, running anyway (figures labelled)'}")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results" / stamp
    out.mkdir(parents=True, exist_ok=True)
    work = make_work()
    backends = start_backends(work)
    runs = []
    try:
        for rep in range(repeats):
            order = systems[rep % len(systems):] + systems[:rep % len(systems)]
            for sc in scenarios:
                for sy in order:
                    log(f"[{rep + 1}/{repeats}] {sc:14} {sy:8} ...")
                    try:
                        r = measure(sy, sc, SCENARIOS[sc], seconds, args, work)
                    except Exception as e:  # noqa: BLE001 - one failed run must not end the others
                        log(f"    failed: {e}")
                        r = {"error": str(e), "requests": 0, "rps": 0.0, "errors": None}
                    r.update(system=sy, scenario=sc, repeat=rep)
                    raw = r.pop("raw", "")
                    (out / f"{sc}-{sy}-{rep}.txt").write_text(raw)
                    runs.append(r)
                    log(f"    req/s {r.get('rps', 0):,.0f}  cpu/req {fmt(r.get('cpu_us_per_req'), '.1f')} µs  "
                        f"p99 {fmt(r.get('p99_ms'), '.2f')} ms  errors {r.get('errors')}  "
                        f"rss {fmt((r.get('rss_idle_kib') or r.get('rss_kib') or 0) / 1024, '.1f')} MiB")
    finally:
        backends.send_signal(signal.SIGTERM)
        try:
            backends.wait(timeout=5)
        except subprocess.TimeoutExpired:
            backends.kill()
    meta = {"seconds": seconds, "repeats": repeats, "cpus": os.cpu_count(), "load_start": la,
            "quiet": quiet, "load_end": loadavg(), "stamp": stamp,
            "corral_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                            capture_output=True, text=True).stdout.strip(),
            "stickiness": "skipped: corral has no cookie stickiness in this tree (src/sticky)"}
    summary = summarise(runs, systems, scenarios)
    (out / "results.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1))
    md = markdown(summary, meta)
    (out / "results.md").write_text(md)
    try:
        chart(summary, out / "ratios.png", meta)
    except Exception as e:  # noqa: BLE001
        log(f"chart not drawn: {e}")
    latest = ROOT / "bench" / "results" / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(stamp)
    print(md)
    log(f"results in {out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
