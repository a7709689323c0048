//! The Prometheus endpoint: `GET /metrics` on `metrics.host:metrics.port`, in the text
//! exposition format (version 0.0.4).
//!
//! Only this one request is served, so a small HTTP/1.1 responder is written here rather than
//! pulling an HTTP framework into the server: it reads one request head (at most
//! `MAX_REQUEST_HEAD` bytes, within `REQUEST_TIMEOUT`), answers, and closes the connection.
//! Every figure is read from counters the server keeps anyway; a scrape takes no lock a command
//! holds for long, and never touches the metadata store.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::node::{Node, PortKind, Stats};

/// Largest request head read; a scraper's is a few hundred bytes (Prometheus sends about 300).
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a connection may take to send its request head before it is dropped, so idle
/// connections cannot pile up (Prometheus's own scrape timeout defaults to 10 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, and how many bytes, a connection is drained after its response (see `answer`).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;
/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves scrapes until the member shuts down.
pub async fn serve(listener: TcpListener, node: Arc<Node>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = node.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let node = Arc::clone(&node);
                tokio::spawn(async move {
                    if let Err(err) = answer(stream, &node).await {
                        tracing::debug!(%err, "metrics request failed");
                    }
                });
            }
            Err(err) => {
                tracing::warn!(%err, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, node: &Node) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let complete = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(head.windows(4).any(|w| w == b"\r\n\r\n"))
    })
    .await
    .unwrap_or(Ok(false))?;
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    let (status, body, content_type) = if !complete {
        ("400 Bad Request", "bad request\n".to_owned(), "text/plain")
    } else if method != b"GET" && method != b"HEAD" {
        ("405 Method Not Allowed", "only GET is served\n".to_owned(), "text/plain")
    } else if path != b"/metrics" {
        ("404 Not Found", "not found: try /metrics\n".to_owned(), "text/plain")
    } else {
        ("200 OK", render(node), CONTENT_TYPE)
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    if method != b"HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    // Closing with unread bytes makes the kernel reset the connection, which can destroy the
    // response before the client reads it; so read what is left first ("lingering close", as
    // web servers do), for a bounded time and amount.
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
    Ok(())
}

/// Reads one of a volume's operation counters.
type ReadCounter = fn(&kronotop_volume::OpCounters) -> u64;
/// Reads one of a command's totals.
type PerCommand = fn(&crate::commands::slowlog::CommandTotals) -> f64;

/// A metric family: its help and type lines, then samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn new<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Escapes a label value as the exposition format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    Family::new(out, name, "counter", help).sample(name, &[], value);
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    Family::new(out, name, "gauge", help).sample(name, &[], value);
}

/// The whole exposition.
pub fn render(node: &Node) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let o = &mut out;
    Family::new(o, "kronotop_info", "gauge", "This member: its id and version.").sample(
        "kronotop_info",
        &[("member_id", &node.member_id), ("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    gauge(
        o,
        "kronotop_uptime_seconds",
        "Seconds since start.",
        node.started_at.elapsed().as_secs(),
    );

    let clients = node.clients.all();
    let mut f = Family::new(o, "kronotop_connected_clients", "gauge", "Open connections.");
    for (port, kind) in [("client", PortKind::Client), ("admin", PortKind::Admin)] {
        let n = clients.iter().filter(|c| c.port == kind).count();
        f.sample("kronotop_connected_clients", &[("port", port)], n);
    }
    let s = &node.stats;
    for (name, help, value) in [
        ("kronotop_connections_received_total", "Connections accepted.", &s.connections_received),
        (
            "kronotop_rejected_connections_total",
            "Connections refused (maxclients, protected mode).",
            &s.rejected_connections,
        ),
        (
            "kronotop_commands_processed_total",
            "Commands run, all names together.",
            &s.commands_processed,
        ),
        (
            "kronotop_protocol_errors_total",
            "Connections closed for a malformed request.",
            &s.protocol_errors,
        ),
        ("kronotop_net_input_bytes_total", "Bytes read from clients.", &s.net_input_bytes),
        ("kronotop_net_output_bytes_total", "Bytes written to clients.", &s.net_output_bytes),
    ] {
        counter(o, name, help, Stats::get(value));
    }

    let commands = node.command_stats.snapshot();
    let per_command: [(&str, &str, PerCommand); 3] = [
        ("kronotop_commands_total", "Calls, by command.", |c| c.calls as f64),
        ("kronotop_command_failures_total", "Calls answered with an error, by command.", |c| {
            c.failed as f64
        }),
        ("kronotop_command_duration_seconds_total", "Time spent running each command.", |c| {
            c.usec as f64 / 1e6
        }),
    ];
    for (name, help, read) in per_command {
        let mut f = Family::new(o, name, "counter", help);
        for (command, c) in &commands {
            f.sample(name, &[("command", command)], read(c));
        }
    }
    let mut f = Family::new(o, "kronotop_errors_total", "counter", "Error replies, by prefix.");
    for (prefix, n) in node.command_stats.errors() {
        f.sample("kronotop_errors_total", &[("prefix", &prefix)], n);
    }

    let meta = node.meta.commit_stats();
    let mut f = Family::new(
        o,
        "kronotop_metadata_commits_total",
        "counter",
        "Metadata-store commits, by outcome (conflict: not_committed).",
    );
    for (outcome, n) in
        [("committed", &meta.committed), ("conflict", &meta.conflicts), ("failed", &meta.failed)]
    {
        f.sample(
            "kronotop_metadata_commits_total",
            &[("outcome", outcome)],
            n.load(Ordering::Relaxed),
        );
    }

    let volumes: Vec<_> =
        node.volumes.names().into_iter().filter_map(|n| node.volumes.get(&n)).collect();
    let per_volume: [(&str, &str, ReadCounter); 5] = [
        ("kronotop_volume_appends_total", "Entries appended.", |c| {
            c.appends.load(Ordering::Relaxed)
        }),
        ("kronotop_volume_bytes_appended_total", "Entry bytes appended.", |c| {
            c.bytes_appended.load(Ordering::Relaxed)
        }),
        ("kronotop_volume_bytes_read_total", "Entry bytes read.", |c| {
            c.bytes_read.load(Ordering::Relaxed)
        }),
        ("kronotop_volume_syncs_total", "Data syncs run for appends.", |c| {
            c.syncs.load(Ordering::Relaxed)
        }),
        ("kronotop_volume_segments_created_total", "Segments created.", |c| {
            c.segments_created.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, read) in per_volume {
        let mut f = Family::new(o, name, "counter", help);
        for v in &volumes {
            f.sample(name, &[("volume", &v.name)], read(&v.counters));
        }
    }
    let mut f = Family::new(
        o,
        "kronotop_replication_lag_bytes",
        "gauge",
        "Durable bytes a standby has not acknowledged yet (on the primary), or has not copied \
         yet (on the standby, standby=\"self\").",
    );
    for v in &volumes {
        for (member, lag) in crate::commands::volume::standby_lags(v) {
            f.sample(
                "kronotop_replication_lag_bytes",
                &[("volume", &v.name), ("standby", &member)],
                lag,
            );
        }
    }
    for (name, state) in node.volumes.replica_states() {
        f.sample(
            "kronotop_replication_lag_bytes",
            &[("volume", &name), ("standby", "self")],
            state.lag_bytes(),
        );
    }
    out
}
