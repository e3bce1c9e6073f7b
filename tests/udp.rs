//! The `udp` relay over real sockets on 127.0.0.1: echo, per-client flows and their targets,
//! idle expiry, the flow bound, and stopping on drain or listener removal.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

use corral::config::Config;
use corral::metrics::ListenerMetrics;
use corral::proxy::l4::UdpOptions;
use corral::runtime::{Runtime, Source};

/// How long a test waits for a datagram it expects.
const REPLY_WAIT: Duration = Duration::from_secs(2);

/// A UDP echo target answering `"{name}|{payload}"`.
async fn echo_target(name: &'static str) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let mut reply = format!("{name}|").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    addr
}

/// The relay under test: a runtime whose table has a `udp` listener on `port`, bound and
/// served by the runtime itself.
struct Relay {
    port: u16,
    runtime: Runtime,
    options: UdpOptions,
}

impl Relay {
    async fn start(targets: &[(&str, SocketAddr)], options: UdpOptions) -> Relay {
        let port = {
            let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let runtime = Runtime::new(IpAddr::V4(Ipv4Addr::LOCALHOST), vec![]);
        runtime
            .apply(&config(port, targets, &[], &options), Source::File)
            .await
            .unwrap();
        Relay {
            port,
            runtime,
            options,
        }
    }

    fn metrics(&self) -> ListenerMetrics {
        self.runtime
            .table()
            .listener(self.port)
            .unwrap()
            .metrics
            .clone()
    }

    async fn client(&self) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(("127.0.0.1", self.port)).await.unwrap();
        Client(socket)
    }
}

/// A `udp` listener on `port` to the service "echo" made of `targets`; those in `down` are
/// critical (weight 0).
fn config(
    port: u16,
    targets: &[(&str, SocketAddr)],
    down: &[&str],
    options: &UdpOptions,
) -> Config {
    let services: Vec<String> = targets
        .iter()
        .map(|(id, addr)| {
            let status = if down.contains(id) { "critical" } else { "passing" };
            format!(
                r#"{{"ID":"{id}","Service":"echo","Address":"127.0.0.1","Port":{},"Status":"{status}"}}"#,
                addr.port()
            )
        })
        .collect();
    Config::from_json(&format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[
            {{"sourcePort":{port},"protocol":"udp","serviceId":"echo"}}]}}}}],
            "services":[{}],
            "timeouts":{{"udpIdle":{}}},"limits":{{"udpMaxFlows":{}}}}}"#,
        services.join(","),
        options.idle_timeout.as_millis(),
        options.max_flows
    ))
    .unwrap()
}

struct Client(UdpSocket);

impl Client {
    /// Sends `payload` and waits up to `wait` for one datagram back.
    async fn try_exchange(&self, payload: &str, wait: Duration) -> Option<String> {
        // An error (an ICMP port unreachable once the relay is gone) is "no reply" too.
        self.0.send(payload.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 65_536];
        let n = timeout(wait, self.0.recv(&mut buf)).await.ok()?.ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Sends `payload`; returns the name of the target that echoed it.
    async fn exchange(&self, payload: &str) -> String {
        let reply = self
            .try_exchange(payload, REPLY_WAIT)
            .await
            .unwrap_or_else(|| panic!("no reply to {payload:?}"));
        let (name, echoed) = reply.split_once('|').expect("a name|payload reply");
        assert_eq!(echoed, payload, "a reply to another datagram");
        name.to_string()
    }
}

/// Polls `check` every 10 ms until it holds, failing after `limit`.
async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn finishes<F: Future>(what: &str, f: F) -> F::Output {
    timeout(Duration::from_secs(3), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

#[tokio::test]
async fn echo_through_the_relay_counts_bytes_and_flows() {
    let e1 = echo_target("e1").await;
    let relay = Relay::start(&[("e1", e1)], UdpOptions::default()).await;
    let client = relay.client().await;
    assert_eq!(client.exchange("hello").await, "e1");
    // The largest IPv4 UDP payload goes through whole.
    let big = "x".repeat(65_507 - "e1|".len());
    assert_eq!(client.exchange(&big).await, "e1");

    let m = relay.metrics();
    assert_eq!(m.connections.get(), 1);
    assert_eq!(m.active.get(), 1);
    let sent = ("hello".len() + big.len()) as u64;
    assert_eq!(m.bytes_in.get(), sent);
    eventually("bytes_out", REPLY_WAIT, || m.bytes_out.get() == sent + 6).await;
}

#[tokio::test]
async fn clients_are_kept_apart_and_keep_their_target() {
    let (e1, e2) = (echo_target("e1").await, echo_target("e2").await);
    let relay = Relay::start(&[("e1", e1), ("e2", e2)], UdpOptions::default()).await;
    let (a, b) = (relay.client().await, relay.client().await);
    let first_a = a.exchange("a-0").await;
    let first_b = b.exchange("b-0").await;
    assert_ne!(first_a, first_b, "weights 1/1: two flows, two targets");
    for i in 1..20 {
        // `exchange` checks each client gets the echo of its own datagram only.
        assert_eq!(a.exchange(&format!("a-{i}")).await, first_a);
        assert_eq!(b.exchange(&format!("b-{i}")).await, first_b);
    }
    let m = relay.metrics();
    assert_eq!((m.connections.get(), m.active.get()), (2, 2));
}

#[tokio::test]
async fn a_flow_moves_only_when_its_target_goes() {
    let targets = [
        ("e1", echo_target("e1").await),
        ("e2", echo_target("e2").await),
    ];
    let relay = Relay::start(&targets, UdpOptions::default()).await;
    let client = relay.client().await;
    let first = client.exchange("0").await;
    let other = if first == "e1" { "e2" } else { "e1" };
    let apply = |down: &'static str| {
        let config = config(relay.port, &targets, &[down], &relay.options);
        let runtime = &relay.runtime;
        async move { runtime.apply(&config, Source::File).await.unwrap() }
    };

    // A new table in which the target is still usable: the flow keeps it.
    apply("nobody").await;
    for i in 1..5 {
        assert_eq!(client.exchange(&format!("{i}")).await, first);
    }
    // Its target at weight 0: the same flow moves to the other one, and stays there when
    // the first comes back.
    apply(if first == "e1" { "e1" } else { "e2" }).await;
    assert_eq!(client.exchange("5").await, other);
    apply("nobody").await;
    assert_eq!(client.exchange("6").await, other);
    let m = relay.metrics();
    assert_eq!(
        (m.connections.get(), m.active.get()),
        (1, 1),
        "one client, one flow"
    );
}

#[tokio::test]
async fn idle_flows_expire_then_a_new_flow_opens() {
    let e1 = echo_target("e1").await;
    let options = UdpOptions {
        idle_timeout: Duration::from_millis(200),
        ..UdpOptions::default()
    };
    let relay = Relay::start(&[("e1", e1)], options).await;
    let client = relay.client().await;
    let m = relay.metrics();
    // Traffic more often than the timeout keeps one flow.
    for i in 0..5 {
        client.exchange(&format!("{i}")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((m.connections.get(), m.active.get()), (1, 1));

    eventually("the flow to expire", Duration::from_secs(3), || {
        m.active.get() == 0
    })
    .await;
    assert_eq!(client.exchange("again").await, "e1");
    assert_eq!((m.connections.get(), m.active.get()), (2, 1));
}

#[tokio::test]
async fn a_full_flow_table_drops_new_clients_only() {
    let e1 = echo_target("e1").await;
    let options = UdpOptions {
        max_flows: 2,
        ..UdpOptions::default()
    };
    let relay = Relay::start(&[("e1", e1)], options).await;
    let (a, b, c) = (
        relay.client().await,
        relay.client().await,
        relay.client().await,
    );
    a.exchange("a").await;
    b.exchange("b").await;
    for _ in 0..3 {
        let reply = c.try_exchange("c", Duration::from_millis(200)).await;
        assert_eq!(reply, None, "a third client at max_flows=2");
    }
    // The live flows are untouched.
    a.exchange("a").await;
    b.exchange("b").await;
    let m = relay.metrics();
    assert_eq!((m.connections.get(), m.active.get()), (2, 2));
}

#[tokio::test]
async fn stops_on_drain_and_on_listener_removal() {
    let e1 = echo_target("e1").await;

    let relay = Relay::start(&[("e1", e1)], UdpOptions::default()).await;
    relay.client().await.exchange("x").await;
    let m = relay.metrics();
    finishes("drain", relay.runtime.drain(Duration::from_secs(1))).await;
    eventually("flows dropped after drain", Duration::from_secs(3), || {
        m.active.get() == 0
    })
    .await;

    let relay = Relay::start(&[("e1", e1)], UdpOptions::default()).await;
    let client = relay.client().await;
    client.exchange("x").await;
    let m = relay.metrics();
    relay
        .runtime
        .apply(&Config::default(), Source::File)
        .await
        .unwrap();
    eventually(
        "flows dropped after removal",
        Duration::from_secs(3),
        || m.active.get() == 0,
    )
    .await;
    let reply = client.try_exchange("y", Duration::from_millis(200)).await;
    assert_eq!(reply, None);
}
