"""Connection-per-request HTTPS load with TLS session resumption (wrk, ab and h2load do
full handshakes only). Threads each loop: connect offering the last session, GET, read the
whole response, close. Prints one JSON object: requests, rps, p50/p99 (ms), errors, resumed.
"""

import json
import re
import socket
import ssl
import sys
import threading
import time


def main():
    port, path, seconds, conns = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    request = f"GET {path} HTTP/1.1\r\nHost: bench.example.com\r\nConnection: close\r\n\r\n".encode()
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    lat, counts = [], {"errors": 0, "resumed": 0}

    def worker():
        session = None
        mine, errors, resumed = [], 0, 0
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                    with ctx.wrap_socket(raw, server_hostname="bench.example.com", session=session) as s:
                        s.sendall(request)
                        data = b""
                        while True:
                            chunk = s.recv(65536)
                            if not chunk:
                                break
                            data += chunk
                        if not re.match(rb"HTTP/1\.[01] 200", data):
                            errors += 1
                            continue
                        resumed += s.session_reused
                        session = s.session
            except (OSError, ssl.SSLError):
                errors += 1
                session = None
                continue
            mine.append((time.monotonic() - t0) * 1000)
        with lock:
            lat.extend(mine)
            counts["errors"] += errors
            counts["resumed"] += resumed

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, len(lat) * q // 100)] if lat else None  # noqa: E731
    print(json.dumps({"requests": len(lat), "rps": len(lat) / elapsed, "p50_ms": pick(50),
                      "p99_ms": pick(99), "errors": counts["errors"], "resumed": counts["resumed"]}))


if __name__ == "__main__":
    main()
