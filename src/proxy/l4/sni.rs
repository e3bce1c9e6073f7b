//! `sni` listeners: route on the ClientHello's server name without terminating TLS. The
//! ClientHello is read (up to 16 KiB, within the handshake timeout), parsed, and replayed to
//! the chosen target, so the proxy never needs the key.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::clienthello::{parse_client_hello, ClientHello, MAX_CLIENT_HELLO};
use crate::routing::normalize_host;
use crate::runtime::Shared;
use crate::server::drain;

pub async fn serve<IO>(mut client: IO, port: u16, shared: Arc<Shared>, drain: drain::Watch)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = shared.table.load().timeouts.handshake();
    let mut buf = Vec::with_capacity(1024);
    let hello = match tokio::time::timeout(deadline, read_client_hello(&mut client, &mut buf)).await
    {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => {
            tracing::debug!(port, error = %e, "no usable ClientHello; closing");
            return;
        }
        Err(_) => {
            tracing::debug!(port, "ClientHello not received in time; closing");
            return;
        }
    };
    let table = shared.table.load_full();
    let Some(listener) = table.listener(port) else {
        return;
    };
    let host = hello.server_name.as_deref().and_then(normalize_host);
    let Some(route) = listener.routes.lookup(host.as_deref(), "") else {
        tracing::debug!(port, server_name = ?hello.server_name, "no rule for this server name");
        return;
    };
    super::tcp::relay(client, &buf, &table, route, &drain).await;
}

async fn read_client_hello<IO: AsyncRead + Unpin>(
    client: &mut IO,
    buf: &mut Vec<u8>,
) -> Result<ClientHello, String> {
    let mut chunk = [0u8; 4096];
    loop {
        match parse_client_hello(buf) {
            Ok(Some(hello)) => return Ok(hello),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if buf.len() >= MAX_CLIENT_HELLO {
            return Err("ClientHello larger than 16 KiB".into());
        }
        let want = chunk.len().min(MAX_CLIENT_HELLO - buf.len());
        let n = client
            .read(&mut chunk[..want])
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the ClientHello ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
