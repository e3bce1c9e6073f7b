//! The corral binary as an operator runs it: SIGHUP reloads, SIGTERM drains, timeouts.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Proc {
    child: Child,
    dir: std::path::PathBuf,
}

impl Proc {
    fn start(config: &str) -> Proc {
        let dir = std::env::temp_dir().join(format!(
            "corral-life-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("corral.json"), config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args([
                "--config",
                "corral.json",
                "--data-dir",
                "state",
                "--listen-ip",
                "127.0.0.1",
            ])
            .arg("--control-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Proc { child, dir }
    }

    fn write_config(&self, config: &str) {
        std::fs::write(self.dir.join("corral.json"), config).unwrap();
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_for(mut pred: impl AsyncFnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if pred().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn try_body(port: u16) -> Option<String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    drop(stream);
    let (status, _, body) = get(port, "x", "/").await;
    (status == StatusCode::OK).then_some(body)
}

fn lb_config(port: u16, service: &str, backend: &Backend) -> String {
    format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[{{"sourcePort":{port},"serviceId":"{service}"}}]}}}}],
          "services":[{{"ID":"{service}-1","Service":"{service}","Port":{}}}]}}"#,
        backend.addr.port()
    )
}

#[tokio::test]
async fn sighup_applies_a_valid_file_and_refuses_a_bad_one() {
    let a = Backend::start("a", Behaviour::Name).await;
    let b = Backend::start("b", Behaviour::Name).await;
    let (port, port2) = (free_port(), free_port());
    let corral = Proc::start(&lb_config(port, "a", &a));
    wait_for(
        async || try_body(port).await.as_deref() == Some("a"),
        "first table",
    )
    .await;

    // A new file: another service, and the listener moves to another port.
    corral.write_config(&lb_config(port2, "b", &b));
    corral.signal("HUP");
    wait_for(
        async || try_body(port2).await.as_deref() == Some("b"),
        "reloaded table",
    )
    .await;
    wait_for(
        async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        },
        "old listener closed",
    )
    .await;

    // A broken file is refused; the last good table keeps serving.
    corral.write_config(
        r#"{"loadBalancers": [{"name": "lb", "lbConfig": {"portRules": [{"bogus": 1}]}}]}"#,
    );
    corral.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(try_body(port2).await.as_deref(), Some("b"));
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    let slow = Backend::start("slow", Behaviour::Slow(Duration::from_millis(800))).await;
    let port = free_port();
    let mut corral = Proc::start(&lb_config(port, "slow", &slow));
    wait_for(
        async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
        "listener",
    )
    .await;
    let request = tokio::spawn(async move { get(port, "x", "/").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    corral.signal("TERM");
    let (status, _, body) = request.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "slow"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(code) = corral.child.try_wait().unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline, "corral did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "{code:?}");
}

#[tokio::test]
async fn a_slow_head_is_cut_but_an_idle_keepalive_is_not() {
    let b = Backend::start("b", Behaviour::Name).await;
    let port = free_port();
    let _rt = corral(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[{{"sourcePort":{port},"serviceId":"b"}}]}}}}],
          "services":[{{"ID":"b","Service":"b","Port":{}}}],
          "timeouts":{{"requestHeaders":400,"idleKeepalive":1500}}}}"#,
        b.addr.port()
    ))
    .await;

    // Slowloris: half a head, then silence. Closed after the head timeout, not the idle one.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let cut_after = start.elapsed();
    assert!(
        cut_after < Duration::from_millis(1200),
        "cut after {cut_after:?}"
    );
    assert!(
        cut_after >= Duration::from_millis(300),
        "cut after {cut_after:?}"
    );

    // Idle keep-alive: still usable after longer than the head timeout...
    let mut client = Client::connect(port).await;
    client.get("x", "/").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, _, _) = client.get("x", "/").await;
    assert_eq!(status, StatusCode::OK);
    // ...and closed once the idle timeout has passed.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(client.try_get("x", "/").await.is_err());
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_but_a_busy_one_is_not() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let b = Backend::start("b", Behaviour::Name).await;
    let port = free_port();
    let _rt = corral(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[{{"sourcePort":{port},"serviceId":"b"}}]}}}}],
          "services":[{{"ID":"b","Service":"b","Port":{}}}],
          "timeouts":{{"idleKeepalive":1000}}}}"#,
        b.addr.port()
    ))
    .await;

    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let mut conn = tokio::spawn(conn);
    let get = || {
        http::Request::get("http://x/")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    // Requests 600 ms apart keep it open past the idle timeout...
    for _ in 0..3 {
        let response = sender.send_request(get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert!(!conn.is_finished(), "closed while in use");
    // ...and silence closes it (GOAWAY, then the close) once the timeout has passed.
    let closed = tokio::time::timeout(Duration::from_secs(3), &mut conn).await;
    assert!(closed.is_ok(), "an idle h2 connection stayed open");
    assert!(sender.send_request(get()).await.is_err());
}
