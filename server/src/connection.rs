//! One client connection: read, parse every complete request already buffered, dispatch each,
//! encode the replies, flush once, repeat.
//!
//! Pipelining falls out of this loop: a client that writes 10,000 commands at once gets its
//! 10,000 replies in order, written in a few large writes instead of 10,000 small ones. A protocol
//! error is answered with `-ERR Protocol error: …` after the replies of the requests before it,
//! and the connection is closed, as Redis does; the server and other connections go on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::commands::{Ctx, dispatch};
use crate::error::CommandError;
use crate::node::{ClientHandle, Node};
use crate::protocol::reply::{Reply, encode};
use crate::protocol::request::{Limits, RequestParser};
use crate::session::Session;

/// Read buffer size, and the most we ask the kernel for in one read. 16 KiB is Redis's
/// `PROTO_IOBUF_LEN`.
const READ_CHUNK: usize = 16 * 1024;

/// Replies are written out once this much is pending even if more requests are buffered, so a
/// huge pipeline does not hold all of its replies in memory at once (Redis's `NET_MAX_WRITES_PER_EVENT`
/// is 64 KiB; we allow a little more per write).
const FLUSH_THRESHOLD: usize = 256 * 1024;

/// An idle connection's buffers are given back when they grew past this, so one large request
/// does not pin its memory for the connection's lifetime.
const SHRINK_ABOVE: usize = 1024 * 1024;

/// After a protocol error we stop reading requests but keep draining the socket for this long
/// before closing, so the client receives the error instead of a reset from unread data.
const LINGER: Duration = Duration::from_millis(200);

/// Serves one accepted connection until the client leaves, is killed, or the server shuts down.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    node: Arc<Node>,
    client: Arc<ClientHandle>,
) {
    let id = client.id;
    let mut session = Session::new(&node, client);
    if let Err(err) = run(stream, &node, &mut session).await {
        tracing::debug!(client = id, %err, "connection ended with an I/O error");
    }
    node.clients.unregister(id);
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    node: &Arc<Node>,
    session: &mut Session,
) -> std::io::Result<()> {
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut parser = RequestParser::new();
    loop {
        if inbuf.capacity() - inbuf.len() < READ_CHUNK / 4 {
            inbuf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            () = session.client.kill.cancelled() => return Ok(()),
            () = node.shutdown.cancelled() => return Ok(()),
            read = stream.read_buf(&mut inbuf) => read?,
        };
        if read == 0 {
            return Ok(());
        }
        node.stats.net_input_bytes.fetch_add(read as u64, Ordering::Relaxed);

        let mut commands = 0u64;
        let mut errors = 0u64;
        let mut last_command = None;
        let mut close = false;
        loop {
            let limits = Limits {
                max_bulk_len: node.settings.proto_max_bulk_len.load(Ordering::Relaxed),
                unauthenticated: !session.authenticated,
            };
            match parser.parse(&mut inbuf, limits) {
                Ok(Some(request)) => {
                    let blocking =
                        request.args.first().is_some_and(|n| crate::commands::is_blocking(n));
                    let outcome = if blocking {
                        // A command that may wait indefinitely (ZWATCH) is abandoned when the client
                        // goes away; bytes that arrive meanwhile wait in the buffer.
                        let mut ctx = Ctx { node, session };
                        let run = dispatch(&request.args, &mut ctx);
                        tokio::pin!(run);
                        loop {
                            if inbuf.capacity() - inbuf.len() < READ_CHUNK / 4 {
                                inbuf.reserve(READ_CHUNK);
                            }
                            tokio::select! {
                                done = &mut run => break Some(done),
                                () = node.shutdown.cancelled() => break None,
                                read = stream.read_buf(&mut inbuf) => {
                                    if read? == 0 {
                                        break None;
                                    }
                                }
                            }
                        }
                    } else {
                        Some(dispatch(&request.args, &mut Ctx { node, session }).await)
                    };
                    let Some((reply, name)) = outcome else { return Ok(()) };
                    commands += 1;
                    if let Reply::Error(line) = &reply {
                        errors += 1;
                        node.command_stats.count_error(line);
                    }
                    last_command = name.or(last_command);
                    encode(reply, session.protocol, &mut out);
                    if session.close_after_reply {
                        close = true;
                        break;
                    }
                    if out.len() >= FLUSH_THRESHOLD {
                        record(
                            node,
                            session,
                            std::mem::take(&mut commands),
                            std::mem::take(&mut errors),
                            out.len() as u64,
                            last_command.take(),
                        );
                        settle(session).await?;
                        stream.write_all(&out).await?;
                        out.clear();
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(client = session.client.id, %err, "closing connection");
                    node.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    node.command_stats.count_error("ERR");
                    encode(
                        CommandError::err_owned(err.to_string()).to_reply(),
                        session.protocol,
                        &mut out,
                    );
                    errors += 1;
                    close = true;
                    break;
                }
            }
        }
        record(node, session, commands, errors, out.len() as u64, last_command);
        settle(session).await?;
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            return linger_close(stream).await;
        }
        if inbuf.is_empty() && inbuf.capacity() > SHRINK_ABOVE {
            inbuf = BytesMut::with_capacity(READ_CHUNK);
        }
        if out.capacity() > SHRINK_ABOVE {
            out = BytesMut::with_capacity(READ_CHUNK);
        }
    }
}

/// Publishes a batch's counters and the client's last command, once per batch and before its
/// replies are written: a client holding a reply must find its command counted by INFO, as in
/// Redis, which counts a command before replying.
fn record(
    node: &Node,
    session: &Session,
    commands: u64,
    errors: u64,
    written: u64,
    last_command: Option<&'static str>,
) {
    let stats = &node.stats;
    stats.net_output_bytes.fetch_add(written, Ordering::Relaxed);
    if commands > 0 {
        stats.commands_processed.fetch_add(commands, Ordering::Relaxed);
        let mut info = session.client.info();
        info.last_active = Instant::now();
        if let Some(name) = last_command {
            info.last_command = name;
        }
    }
    if errors > 0 {
        stats.error_replies.fetch_add(errors, Ordering::Relaxed);
    }
}

/// Waits until the changes the pending replies report are durable (`redis.durability =
/// always`). When a flush fails, the replies are never written and the connection is closed: the
/// client must not take an unsynced write as acknowledged.
async fn settle(session: &mut Session) -> std::io::Result<()> {
    for (shard, seq) in std::mem::take(&mut session.durable_waits) {
        if let Err(err) = shard.wait_durable(seq).await {
            tracing::error!(client = session.client.id, %err, "closing: writes not durable");
            return Err(std::io::Error::other(err));
        }
    }
    Ok(())
}

/// Half-closes the connection and drains what the client still sends for a moment, so the last
/// reply (often an error explaining the close) reaches the client.
async fn linger_close<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> std::io::Result<()> {
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + LINGER;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Err(_) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(err),
        }
    }
}
