//! Listeners, admission (maxclients, protected mode) and graceful shutdown.
//!
//! `run` accepts on every listener (client and admin ports, the optional Unix socket) until the
//! shutdown future completes, then stops accepting, signals every connection (each finishes the
//! command it is running, writes its replies and closes), and waits for them up to
//! `server.shutdown_timeout_ms`.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::task::TaskTracker;

use crate::config::NetworkConfig;
use crate::node::{BoundAddrs, DEFAULT_USER, Node, PeerAddr, PortKind};

/// Redis's refusal when `maxclients` is reached (`networking.c`).
const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// Redis's protected-mode refusal (`networking.c`, `DENIED`), with our name and knobs.
const DENIED_REPLY: &[u8] = b"-DENIED Kronotop is running in protected mode because protected mode \
is enabled and no password is set for the default user. In this mode connections are only accepted \
from the loopback interface. If you want to connect from external computers to Kronotop you may \
adopt one of the following solutions: 1) Just disable protected mode sending the command 'CONFIG SET \
protected-mode no' from the loopback interface by connecting to Kronotop from the same host the \
server is running, however MAKE SURE Kronotop is not publicly accessible from internet if you do so. \
2) Alternatively you can just disable the protected mode by editing the configuration file, and \
setting server.protected_mode to false, and then restarting the server. 3) If you started the \
server manually just for testing, restart it with KRONOTOP_SERVER__PROTECTED_MODE=false. 4) Set \
up an authentication password for the default user. NOTE: You only need to do one of the above \
things in order for the server to start accepting connections from the outside.\r\n";

/// Pause after a failed `accept` (for example out of file descriptors) before trying again, so the
/// loop does not spin; doubled up to `MAX_ACCEPT_BACKOFF`, as mini-redis does.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The bound listeners: client and admin ports, and the optional Unix socket.
#[derive(Debug)]
pub struct Listeners {
    pub client: TcpListener,
    pub admin: TcpListener,
    pub unix: Option<UnixSocket>,
}

/// The Unix socket listener and its file, which is removed when this is dropped (when the
/// server stops accepting), so the next start does not find it in the way.
#[derive(Debug)]
pub struct UnixSocket {
    listener: UnixListener,
    path: Arc<str>,
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&*self.path);
    }
}

impl Listeners {
    /// Binds the client and admin listeners of the configuration, and its Unix socket if set.
    ///
    /// # Errors
    ///
    /// When an address cannot be bound (in use, not local, no permission).
    pub async fn bind(net: &NetworkConfig) -> std::io::Result<Listeners> {
        let client = bind_one(&net.client.host, net.client.port).await?;
        let admin = bind_one(&net.admin.host, net.admin.port).await?;
        let unix = if net.unix_socket.is_empty() {
            None
        } else {
            // The configuration was validated, so the mode parses; 0o700 is its default anyway.
            let mode = net.unix_socket_mode().unwrap_or(0o700);
            Some(bind_unix(&net.unix_socket, mode).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on the Unix socket {}: {e}", net.unix_socket),
                )
            })?)
        };
        Ok(Listeners { client, admin, unix })
    }

    pub fn addrs(&self) -> std::io::Result<BoundAddrs> {
        Ok(BoundAddrs { client: self.client.local_addr()?, admin: self.admin.local_addr()? })
    }
}

async fn bind_one(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let host = if host == "localhost" { "127.0.0.1" } else { host };
    TcpListener::bind((host, port))
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {host}:{port}: {e}")))
}

/// Binds the Unix socket at `path` with permissions `mode`. A socket file already there is
/// replaced only when nothing answers on it (a server that died left it); a live server's socket,
/// or a file that is not a socket, is an error rather than something to delete.
fn bind_unix(path: &str, mode: u32) -> std::io::Result<UnixSocket> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another server is listening on it",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    let socket = UnixSocket { listener, path: Arc::from(path) };
    // Connecting needs write permission on the file: the mode decides who may connect.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(socket)
}

/// A listener the accept loop serves.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixSocket),
}

/// An accepted connection.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    fn local_addr(&self) -> std::io::Result<PeerAddr> {
        match self {
            Listener::Tcp(l) => Ok(PeerAddr::Tcp(l.local_addr()?)),
            Listener::Unix(u) => Ok(PeerAddr::Unix(Arc::clone(&u.path))),
        }
    }

    async fn accept(&self) -> std::io::Result<(Stream, PeerAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                // Replies to pipelined requests are written in one go; Nagle would only delay
                // them.
                let _ = stream.set_nodelay(true);
                Ok((Stream::Tcp(stream), PeerAddr::Tcp(peer)))
            }
            Listener::Unix(u) => {
                let (stream, _) = u.listener.accept().await?;
                Ok((Stream::Unix(stream), PeerAddr::Unix(Arc::clone(&u.path))))
            }
        }
    }
}

/// Serves every listener until `shutdown` completes, then shuts down gracefully.
pub async fn run(node: Arc<Node>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let tracker = TaskTracker::new();
    let mut loops = vec![
        tokio::spawn(accept_loop(
            Arc::clone(&node),
            Listener::Tcp(listeners.client),
            PortKind::Client,
            tracker.clone(),
        )),
        tokio::spawn(accept_loop(
            Arc::clone(&node),
            Listener::Tcp(listeners.admin),
            PortKind::Admin,
            tracker.clone(),
        )),
    ];
    if let Some(unix) = listeners.unix {
        loops.push(tokio::spawn(accept_loop(
            Arc::clone(&node),
            Listener::Unix(unix),
            PortKind::Client,
            tracker.clone(),
        )));
    }
    tokio::select! {
        () = shutdown => {}
        () = node.shutdown.cancelled() => {}
    }
    tracing::info!("shutting down: no new connections; finishing in-flight commands");
    node.shutdown.cancel();
    // The accept loops return on the cancellation and drop their listeners (and the Unix
    // socket's file).
    for l in loops {
        let _ = l.await;
    }
    tracker.close();
    let timeout = Duration::from_millis(node.config.server.shutdown_timeout_ms);
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        tracing::warn!(
            remaining = tracker.len(),
            "connections still busy after the shutdown timeout; exiting anyway"
        );
    }
    tracing::info!("shutdown complete");
}

async fn accept_loop(node: Arc<Node>, listener: Listener, port: PortKind, tracker: TaskTracker) {
    let laddr = match listener.local_addr() {
        Ok(a) => a,
        Err(err) => {
            tracing::error!(%err, port = port.name(), "listener has no local address");
            return;
        }
    };
    let mut backoff = ACCEPT_BACKOFF;
    loop {
        let accepted = tokio::select! {
            () = node.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = ACCEPT_BACKOFF;
                pair
            }
            Err(err) => {
                tracing::warn!(%err, port = port.name(), "accept failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        node.stats.connections_received.fetch_add(1, Ordering::Relaxed);
        // The Unix socket is plain text whatever the client port does: it is local, and the
        // file's permissions say who may connect.
        let tls = match stream {
            Stream::Tcp(_) => node.tls.acceptor(port).cloned(),
            Stream::Unix(_) => None,
        };
        let denied = match (&laddr, &peer) {
            (PeerAddr::Tcp(bound), PeerAddr::Tcp(from)) => protected_mode_denies(
                node.settings.protected_mode.load(Ordering::Relaxed),
                node.auth.has_default_password(),
                bound.ip(),
                from.ip(),
            ),
            // A Unix socket is local by nature, as protected mode wants.
            _ => false,
        };
        if denied {
            node.stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
            tracker.spawn(refuse(stream, tls, DENIED_REPLY));
            continue;
        }
        let max = node.settings.maxclients.load(Ordering::Relaxed);
        match node.clients.register(peer, laddr.clone(), port, max, DEFAULT_USER) {
            Some(client) => {
                tracker.spawn(serve(stream, tls, Arc::clone(&node), client));
            }
            None => {
                node.stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
                tracker.spawn(refuse(stream, tls, MAX_CLIENTS_REPLY));
            }
        }
    }
}

/// Completes the TLS handshake of a listener that speaks TLS, within `HANDSHAKE_TIMEOUT`; a
/// client that does not (plain text, an unknown certificate) gets `None` and is dropped.
async fn handshake(
    stream: TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(err)) => {
            tracing::debug!(?peer, %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "TLS handshake timed out");
            None
        }
    }
}

/// Serves a registered client, after the TLS handshake on a TLS listener.
async fn serve(
    stream: Stream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    node: Arc<Node>,
    client: Arc<crate::node::ClientHandle>,
) {
    match (stream, tls) {
        (Stream::Unix(stream), _) => crate::connection::serve(stream, node, client).await,
        (Stream::Tcp(stream), None) => crate::connection::serve(stream, node, client).await,
        (Stream::Tcp(stream), Some(acceptor)) => match handshake(stream, &acceptor).await {
            Some(tls) => crate::connection::serve(tls, node, client).await,
            None => node.clients.unregister(client.id),
        },
    }
}

/// Writes a refusal and closes the connection (inside TLS on a TLS listener, so the client can
/// read it).
async fn refuse(stream: Stream, tls: Option<tokio_rustls::TlsAcceptor>, reply: &'static [u8]) {
    async fn write<S: tokio::io::AsyncWrite + Unpin>(mut stream: S, reply: &[u8]) {
        let _ = stream.write_all(reply).await;
        let _ = stream.shutdown().await;
    }
    let stream = match stream {
        Stream::Unix(stream) => return write(stream, reply).await,
        Stream::Tcp(stream) => stream,
    };
    match tls {
        None => write(stream, reply).await,
        Some(acceptor) => {
            if let Some(tls) = handshake(stream, &acceptor).await {
                write(tls, reply).await;
            }
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Protected mode (Redis's rule as the issue states it): with protected mode on, no password for
/// the default user and a listener bound to a non-loopback address, only loopback clients are
/// served.
pub fn protected_mode_denies(
    enabled: bool,
    has_password: bool,
    bound: IpAddr,
    peer: IpAddr,
) -> bool {
    enabled && !has_password && !is_loopback(bound) && !is_loopback(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_mode_rule() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let far: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped_lo: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(protected_mode_denies(true, false, any, far));
        assert!(!protected_mode_denies(true, false, any, lo));
        assert!(!protected_mode_denies(true, false, any, mapped_lo));
        assert!(!protected_mode_denies(true, true, any, far), "a password lifts it");
        assert!(!protected_mode_denies(false, false, any, far), "it can be turned off");
        assert!(!protected_mode_denies(true, false, lo, far), "a loopback bind is already private");
    }
}
