//! Requests to other members over their admin ports: reading a Volume entry's bytes (how a
//! member serves a bucket query whose documents live on another member's shard) and a standby's
//! replication requests to its primary.
//!
//! Connections are kept in a small pool per address and reused; every request has a deadline, so
//! a silent member fails the request instead of hanging it. Replies are decoded as RESP2 frames.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::tls::PeerIo;

type Stream = Box<dyn PeerIo>;

use redis_protocol::resp2::types::OwnedFrame;

/// How long one request to another member may take. Reads of one entry are small; a member that
/// takes longer is treated as unavailable for this request.
const DEADLINE: Duration = Duration::from_secs(5);

/// Idle connections kept per member address.
const POOL_PER_ADDRESS: usize = 4;

/// Connections to other members.
#[derive(Default)]
pub struct Peers {
    idle: std::sync::Mutex<HashMap<String, Vec<Stream>>>,
    /// The password new connections authenticate with as `default` (`auth.masterauth`), for
    /// members whose admin ports require one.
    password: Option<String>,
    /// Set when members' admin ports speak TLS.
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").field("tls", &self.tls.is_some()).finish_non_exhaustive()
    }
}

fn request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one whole reply frame; an error line becomes `Err` with its text.
async fn read_frame(stream: &mut Stream) -> Result<OwnedFrame, String> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if !buf.is_empty() {
            match redis_protocol::resp2::decode::decode(&buf) {
                Ok(Some((OwnedFrame::Error(e), _))) => return Err(e),
                Ok(Some((frame, _))) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(format!("malformed reply from a peer: {e:?}")),
            }
        }
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("peer closed the connection".into());
        }
    }
}

/// Authenticates a new connection with `HELLO 2 AUTH default <password>` and reads the whole
/// reply (a map, not the bulk string `read_bulk` reads), so nothing of it is left for the next
/// request.
async fn authenticate(stream: &mut Stream, password: &str) -> Result<(), String> {
    stream
        .write_all(&request(&[b"HELLO", b"2", b"AUTH", b"default", password.as_bytes()]))
        .await
        .map_err(|e| e.to_string())?;
    read_frame(stream).await.map(drop).map_err(|e| format!("authenticating to a peer: {e}"))
}

impl Peers {
    /// Connections that authenticate with `password` when it is set, over TLS when `tls` is.
    pub fn new(password: Option<String>, tls: Option<TlsConnector>) -> Peers {
        Peers { idle: std::sync::Mutex::default(), password, tls }
    }

    fn take(&self, addr: &str) -> Option<Stream> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_mut(addr)?.pop()
    }

    fn give_back(&self, addr: &str, stream: Stream) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let pool = idle.entry(addr.to_owned()).or_default();
        if pool.len() < POOL_PER_ADDRESS {
            pool.push(stream);
        }
    }

    /// Sends `args` to the member at `addr` (its admin address) and returns the bulk reply.
    ///
    /// # Errors
    ///
    /// The peer's error line, or why it could not be reached in time.
    pub async fn call(&self, addr: &str, args: &[&[u8]]) -> Result<Bytes, String> {
        match self.call_frame(addr, args, DEADLINE).await? {
            OwnedFrame::BulkString(b) => Ok(Bytes::from(b)),
            _ => Err("unexpected reply from a peer".into()),
        }
    }

    /// Sends `args` to the member at `addr` and returns the whole reply, within `deadline`.
    ///
    /// # Errors
    ///
    /// The peer's error line, or why it could not be reached in time.
    pub async fn call_frame(
        &self,
        addr: &str,
        args: &[&[u8]],
        deadline: Duration,
    ) -> Result<OwnedFrame, String> {
        let work = async {
            let mut stream = match self.take(addr) {
                Some(s) => s,
                None => {
                    let mut s = crate::tls::connect(addr, self.tls.as_ref()).await?;
                    // Always log in as `default`: an admin port asks for it once any user has
                    // a password, and a password-less `default` accepts any (here empty) one.
                    authenticate(&mut s, self.password.as_deref().unwrap_or_default()).await?;
                    s
                }
            };
            stream.write_all(&request(args)).await.map_err(|e| e.to_string())?;
            let reply = read_frame(&mut stream).await;
            // Only a connection whose reply was read whole can serve the next request.
            if reply.is_ok() {
                self.give_back(addr, stream);
            }
            reply
        };
        tokio::time::timeout(deadline, work)
            .await
            .map_err(|_| format!("member at {addr} did not answer within {deadline:?}"))?
    }

    /// The verified bytes of an entry of `volume` on the member at `addr`.
    ///
    /// # Errors
    ///
    /// As `call`.
    pub async fn read_entry(
        &self,
        addr: &str,
        volume: &str,
        m: &kronotop_volume::EntryMetadata,
    ) -> Result<Bytes, String> {
        let (seg, pos, len) = (m.segment.to_string(), m.position.to_string(), m.length.to_string());
        self.call(
            addr,
            &[
                b"VOLUME.INSPECT",
                b"ENTRY",
                volume.as_bytes(),
                seg.as_bytes(),
                pos.as_bytes(),
                len.as_bytes(),
            ],
        )
        .await
    }
}
