//! `kronotop bootstrap`: bootstraps a cluster over the admin ports of running members, as the
//! original's `kronotop-ctl bootstrap` does (reference section 6.3); the Docker demo runs it once
//! its members are up.
//!
//! ```text
//! kronotop bootstrap --primary BUCKET node1:3320=0,1 --standby BUCKET node2:3320=0,1
//! ```
//!
//! Steps: `KR.ADMIN INITIALIZE-CLUSTER` on the first primary's member (an already initialised
//! cluster ends the command successfully: it is idempotent); wait until `DESCRIBE-CLUSTER` lists
//! the requested kinds; learn each address's member id with `DESCRIBE-MEMBER`; route the
//! primaries, then the standbys, in argument order; set every routed shard READWRITE.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use redis_protocol::resp3::types::OwnedFrame;

/// One `--primary` or `--standby` argument: a kind, an admin address and shard ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub kind: String,
    pub addr: String,
    pub shards: Vec<u32>,
}

/// Parses `KIND` and `host:port=0,1,2`.
///
/// # Errors
///
/// A kind other than REDIS/STASH/BUCKET, or an assignment without `=` and shard ids.
pub fn parse_assignment(kind: &str, spec: &str) -> anyhow::Result<Assignment> {
    let kind = kind.to_ascii_uppercase();
    if !matches!(kind.as_str(), "REDIS" | "STASH" | "BUCKET") {
        bail!("invalid shard kind '{kind}': expected REDIS, STASH or BUCKET");
    }
    let (addr, ids) =
        spec.split_once('=').with_context(|| format!("'{spec}' must look like host:port=0,1,2"))?;
    let shards = ids
        .split(',')
        .map(|s| {
            s.trim().parse::<u32>().with_context(|| format!("invalid shard id '{s}' in '{spec}'"))
        })
        .collect::<anyhow::Result<Vec<u32>>>()?;
    Ok(Assignment { kind, addr: addr.to_owned(), shards })
}

/// How `kronotop bootstrap` reaches the admin ports.
#[derive(Debug, Default)]
pub struct Connect {
    /// TLS, for admin ports with `network.admin.tls = true`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// A user and password to log in with, for admin ports that require one.
    pub auth: Option<(String, String)>,
}

/// A blocking connection, plain or TLS.
trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

/// A blocking RESP3 connection to an admin port.
struct Admin {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
}

/// How long one reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl Admin {
    fn connect(addr: &str, how: &Connect) -> anyhow::Result<Admin> {
        let tls = how.tls.as_ref();
        let tcp = TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let stream: Box<dyn Io> = match tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = crate::tls::server_name(addr).map_err(anyhow::Error::msg)?;
                let conn = rustls::ClientConnection::new(Arc::clone(config), name)
                    .with_context(|| format!("TLS to {addr}"))?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        };
        let mut admin = Admin { stream, buf: Vec::new() };
        match &how.auth {
            Some((user, pass)) => admin.ok(&["HELLO", "3", "AUTH", user, pass])?,
            None => admin.ok(&["HELLO", "3"])?,
        }
        Ok(admin)
    }

    /// Sends a command; returns its reply, or the error line as `Err`.
    fn call(&mut self, args: &[&str]) -> anyhow::Result<Result<OwnedFrame, String>> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.stream.write_all(&req)?;
        loop {
            if let Some((frame, len)) = redis_protocol::resp3::decode::complete::decode(&self.buf)
                .map_err(|e| anyhow::anyhow!("bad reply: {e:?}"))?
            {
                self.buf.drain(..len);
                return Ok(match frame {
                    OwnedFrame::SimpleError { data, .. } => Err(data),
                    OwnedFrame::BlobError { data, .. } => {
                        Err(String::from_utf8_lossy(&data).into_owned())
                    }
                    other => Ok(other),
                });
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn ok(&mut self, args: &[&str]) -> anyhow::Result<()> {
        self.call(args)?.map(drop).map_err(|e| anyhow::anyhow!("{}: {e}", args.join(" ")))
    }
}

fn map_get<'a>(frame: &'a OwnedFrame, key: &str) -> Option<&'a OwnedFrame> {
    match frame {
        OwnedFrame::Map { data, .. } => data.iter().find_map(|(k, v)| match k {
            OwnedFrame::BlobString { data, .. } | OwnedFrame::SimpleString { data, .. }
                if data.as_slice() == key.as_bytes() =>
            {
                Some(v)
            }
            _ => None,
        }),
        _ => None,
    }
}

fn shard_ids(frame: &OwnedFrame) -> Vec<u32> {
    match frame {
        OwnedFrame::Map { data, .. } => data
            .keys()
            .filter_map(|k| match k {
                OwnedFrame::Number { data, .. } => u32::try_from(*data).ok(),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Runs the bootstrap; returns what it did, one line per step, for the operator.
///
/// # Errors
///
/// Unreachable members, shard ids the cluster does not have, and any refused `KR.ADMIN` step.
pub fn run(
    primaries: &[Assignment],
    standbys: &[Assignment],
    sync_standbys: &[Assignment],
    discovery: Duration,
    how: &Connect,
) -> anyhow::Result<Vec<String>> {
    // A sync standby is a standby first; one named both ways is routed once.
    let mut standbys = standbys.to_vec();
    for s in sync_standbys {
        let shards: Vec<u32> = s
            .shards
            .iter()
            .copied()
            .filter(|shard| {
                !standbys
                    .iter()
                    .any(|a| a.kind == s.kind && a.addr == s.addr && a.shards.contains(shard))
            })
            .collect();
        if !shards.is_empty() {
            standbys.push(Assignment { shards, ..s.clone() });
        }
    }
    let standbys = &standbys[..];
    let first = primaries.first().context("at least one --primary is required")?;
    let mut log = Vec::new();
    let mut admin = Admin::connect(&first.addr, how)?;
    match admin.call(&["KR.ADMIN", "INITIALIZE-CLUSTER"])? {
        Ok(_) => log.push(format!("initialised the cluster through {}", first.addr)),
        Err(e) if e.contains("cluster has already been initialized") => {
            log.push("the cluster is already initialised: nothing to do".to_owned());
            return Ok(log);
        }
        Err(e) => bail!("KR.ADMIN INITIALIZE-CLUSTER: {e}"),
    }
    let deadline = Instant::now() + discovery;
    let all: Vec<&Assignment> = primaries.iter().chain(standbys).collect();
    loop {
        let cluster =
            admin.call(&["KR.ADMIN", "DESCRIBE-CLUSTER"])?.map_err(|e| anyhow::anyhow!(e))?;
        let mut missing = Vec::new();
        for a in &all {
            let kind = if a.kind == "BUCKET" { "bucket" } else { "redis" };
            let known = map_get(&cluster, kind).map(shard_ids).unwrap_or_default();
            if !known.is_empty() {
                if let Some(bad) = a.shards.iter().find(|s| !known.contains(s)) {
                    bail!("Invalid shard ids: {} has no shard {bad}", a.kind);
                }
            } else {
                missing.push(a.kind.clone());
            }
        }
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("shards of {} did not appear within {discovery:?}", missing.join(", "));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut ids = std::collections::BTreeMap::new();
    for a in &all {
        if !ids.contains_key(&a.addr) {
            let mut member = Admin::connect(&a.addr, how)?;
            // A member learns of the initialisation through its topology watch, a moment after
            // the first member did it; until then it answers that the cluster is not initialised.
            let me = loop {
                match member.call(&["KR.ADMIN", "DESCRIBE-MEMBER"])? {
                    Ok(me) => break me,
                    Err(e) if e.contains("not been initialized") && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => bail!("KR.ADMIN DESCRIBE-MEMBER on {}: {e}", a.addr),
                }
            };
            let id = match map_get(&me, "member_id") {
                Some(OwnedFrame::BlobString { data, .. }) => {
                    String::from_utf8_lossy(data).into_owned()
                }
                _ => bail!("{} did not tell its member id", a.addr),
            };
            log.push(format!("{} is member {id}", a.addr));
            ids.insert(a.addr.clone(), id);
        }
    }
    for (role, list) in
        [("PRIMARY", primaries), ("STANDBY", standbys), ("SYNC-STANDBY", sync_standbys)]
    {
        for a in list {
            let id = &ids[&a.addr];
            for shard in &a.shards {
                admin.ok(&["KR.ADMIN", "ROUTE", "SET", role, &a.kind, &shard.to_string(), id])?;
                log.push(format!(
                    "{} shard {shard}: {} is {}",
                    a.kind,
                    a.addr,
                    role.to_ascii_lowercase()
                ));
            }
        }
    }
    for a in primaries {
        for shard in &a.shards {
            admin.ok(&[
                "KR.ADMIN",
                "SET-SHARD-STATUS",
                &a.kind,
                &shard.to_string(),
                "READWRITE",
            ])?;
        }
    }
    log.push("every routed shard is READWRITE".to_owned());
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_parse() {
        let a = parse_assignment("bucket", "node1:3320=0,1,2").unwrap();
        assert_eq!(
            a,
            Assignment { kind: "BUCKET".into(), addr: "node1:3320".into(), shards: vec![0, 1, 2] }
        );
        assert!(parse_assignment("TABLE", "n:1=0").is_err());
        assert!(parse_assignment("REDIS", "n:1").is_err());
        assert!(parse_assignment("REDIS", "n:1=x").is_err());
    }
}
