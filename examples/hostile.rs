//! The hostile raw cases (`tests/common/raw.rs`) against any HTTP proxies on 127.0.0.1, for
//! `scripts/hostile.sh`. The raw backend listens on `--backend PORT`; every proxy must
//! forward all paths to it.
//!
//! ```text
//! hostile cases --backend 18500 corral=18501 haproxy=18502 nginx=18503
//! hostile idle --backend 18500 --pid 4242 --count 10000 corral=18501
//! ```

#[path = "../tests/common/raw.rs"]
mod raw;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raw::{exchange, RawBackend, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    mode: String,
    backend: u16,
    pid: Option<u32>,
    count: usize,
    proxies: Vec<(String, u16)>,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it
        .next()
        .ok_or("usage: hostile cases|idle --backend PORT NAME=PORT...")?;
    let mut a = Args {
        mode,
        backend: 0,
        pid: None,
        count: 10_000,
        proxies: Vec::new(),
    };
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--backend" => a.backend = value()?.parse().map_err(|e| format!("{e}"))?,
            "--pid" => a.pid = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--count" => a.count = value()?.parse().map_err(|e| format!("{e}"))?,
            proxy => {
                let (name, port) = proxy
                    .split_once('=')
                    .ok_or(format!("not NAME=PORT: {proxy}"))?;
                a.proxies
                    .push((name.to_string(), port.parse().map_err(|e| format!("{e}"))?));
            }
        }
    }
    Ok(a)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let args = args()?;
    let backend = RawBackend::start(args.backend)
        .await
        .map_err(|e| format!("backend port {}: {e}", args.backend))?;
    match args.mode.as_str() {
        "cases" => cases(&args, &backend).await,
        "idle" => idle(&args).await,
        other => Err(format!("unknown mode {other}")),
    }
}

async fn cases(args: &Args, backend: &RawBackend) -> Result<(), String> {
    let cases = raw::cases();
    let mut verdicts: Vec<Vec<Verdict>> = Vec::new();
    let mut cells: Vec<Vec<String>> = Vec::new();
    for (name, port) in &args.proxies {
        eprintln!("running {} cases against {name} on {port}", cases.len());
        let (mut v, mut c) = (Vec::new(), Vec::new());
        for case in &cases {
            let out = raw::run(case, *port, backend, Duration::from_secs(3)).await;
            v.push(out.verdict);
            c.push(out.cell(case));
        }
        verdicts.push(v);
        cells.push(c);
    }
    let names: Vec<&str> = args.proxies.iter().map(|(n, _)| n.as_str()).collect();
    println!("| class | case | {} |", names.join(" | "));
    println!("|---|---|{}", "---|".repeat(names.len()));
    for (i, case) in cases.iter().enumerate() {
        let row: Vec<&str> = cells.iter().map(|c| c[i].as_str()).collect();
        println!(
            "| {} | {} | {} |",
            case.class,
            case.name.replace('|', "\\|"),
            row.join(" | ")
        );
    }
    println!();
    for (name, v) in names.iter().zip(&verdicts) {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for verdict in v {
            *count.entry(verdict.label()).or_default() += 1;
        }
        println!("{name}: {count:?}");
    }
    Ok(())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Opens `count` keep-alive connections (one request each, then idle), reports the proxy's
/// RSS, and checks a new connection is still answered.
async fn idle(args: &Args) -> Result<(), String> {
    let (name, port) = args.proxies.first().ok_or("idle needs NAME=PORT")?;
    let pid = args.pid.ok_or("idle needs --pid")?;
    let before = rss_kib(pid).ok_or("cannot read the proxy's RSS")?;
    let start = Instant::now();
    let mut conns = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let mut s = TcpStream::connect(("127.0.0.1", *port))
            .await
            .map_err(|e| format!("connection {i}: {e}"))?;
        s.write_all(b"GET /idle HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .map_err(|e| format!("connection {i}: {e}"))?;
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .map_err(|_| format!("connection {i}: no answer in 5 s"))?
            .map_err(|e| format!("connection {i}: {e}"))?;
        if !b[..n].starts_with(b"HTTP/1.1 200") {
            return Err(format!(
                "connection {i}: {:?}",
                String::from_utf8_lossy(&b[..n])
            ));
        }
        conns.push(s);
    }
    let opened = start.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid).ok_or("cannot read the proxy's RSS")?;
    let t = Instant::now();
    let got = exchange(
        *port,
        b"GET /new HTTP/1.1\r\nHost: h\r\n\r\n",
        1,
        Duration::from_secs(5),
    )
    .await;
    let latency = t.elapsed();
    let ok = got.statuses() == [200];
    println!(
        "{name}: {} idle keep-alive connections opened in {:.1}s; RSS {} KiB -> {} KiB \
         ({:.1} KiB per connection); new request: {} in {:.1} ms",
        args.count,
        opened.as_secs_f64(),
        before,
        after,
        after.saturating_sub(before) as f64 / args.count as f64,
        if ok { "200" } else { "FAILED" },
        latency.as_secs_f64() * 1000.0
    );
    drop(conns);
    if ok {
        Ok(())
    } else {
        Err(format!("new request failed: {got:?}"))
    }
}
