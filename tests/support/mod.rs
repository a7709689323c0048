//! Test kit for the black-box tests: starts the real `kronotop` binary on free ports with a
//! temporary data directory, and talks to it with raw RESP bytes.
//!
//! The server is started with `--port 0 --admin-port 0 --log-format json`; the kit reads the
//! JSON log lines on stderr until both "listening" lines have named their addresses. A server is
//! killed when its `Server` value is dropped, so no test leaves a process behind.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use redis_protocol::resp3::types::OwnedFrame;

/// Longest we wait for a server to start or stop, or for a reply.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How a test wants its server.
#[derive(Debug, Default)]
pub struct Builder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    config: Option<String>,
    human_logs: bool,
    members: u16,
}

impl Builder {
    /// Logs in the human format; such a server cannot be waited for with `start`, whose
    /// readiness check reads the JSON logs.
    pub fn human_logs(mut self) -> Self {
        self.human_logs = true;
        self
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Sets a configuration key with `--set key=value`.
    pub fn set(self, key: &str, value: &str) -> Self {
        self.arg("--set").arg(format!("{key}={value}"))
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Uses this data directory instead of a fresh temporary one.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Writes this TOML into a file in the data directory's parent and passes `--config`.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    /// Runs `n` members in the one process (`--members n`).
    pub fn members(mut self, n: u16) -> Self {
        self.members = n;
        self
    }

    /// Spawns the process without waiting for it to listen.
    pub fn spawn(self) -> Spawned {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = self.data_dir.clone().unwrap_or_else(|| tmp.path().join("data"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kronotop"));
        cmd.arg("--port")
            .arg("0")
            .arg("--admin-port")
            .arg("0")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--log-format")
            .arg(if self.human_logs { "human" } else { "json" })
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Variables of the developer's shell must not leak into what a test configures.
        for (k, _) in std::env::vars() {
            if k.starts_with("KRONOTOP_") {
                cmd.env_remove(k);
            }
        }
        if let Some(text) = &self.config {
            let file = tmp.path().join("kronotop.toml");
            std::fs::write(&file, text).unwrap();
            cmd.arg("--config").arg(file);
        }
        if self.members > 1 {
            cmd.arg("--members").arg(self.members.to_string());
        }
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line.clone());
                sink.lock().unwrap().push(line);
            }
        });
        Spawned {
            child: Some(child),
            lines: rx,
            logs,
            data_dir,
            members: self.members.max(1),
            _tmp: tmp,
        }
    }

    /// Starts the server and waits until it listens.
    pub fn start(self) -> Server {
        self.spawn().ready()
    }
}

/// A spawned process that may or may not come up.
#[derive(Debug)]
pub struct Spawned {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    logs: Arc<Mutex<Vec<String>>>,
    data_dir: PathBuf,
    members: u16,
    _tmp: tempfile::TempDir,
}

impl Spawned {
    /// Waits for the process to exit (for start-up failures), returning its status and logs.
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let status = wait_child(self.child.as_mut().unwrap(), "process did not exit");
        self.child = None;
        (status, self.logs.lock().unwrap().join("\n"))
    }

    /// Waits until both listeners of every member are up.
    pub fn ready(self) -> Server {
        let deadline = Instant::now() + PATIENCE;
        let n = usize::from(self.members);
        let mut clients: Vec<Option<SocketAddr>> = vec![None; n];
        let mut admins: Vec<Option<SocketAddr>> = vec![None; n];
        while clients.iter().chain(&admins).any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    panic!("server did not start; logs:\n{}", self.logs.lock().unwrap().join("\n"))
                }
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let fields = &json["fields"];
            if fields["message"] == "listening" {
                let addr: SocketAddr = fields["addr"].as_str().unwrap().parse().unwrap();
                let i = usize::try_from(fields["member"].as_u64().unwrap_or(0)).unwrap();
                match fields["kind"].as_str() {
                    Some("client") => clients[i] = Some(addr),
                    Some("admin") => admins[i] = Some(addr),
                    _ => {}
                }
            }
        }
        let clients: Vec<SocketAddr> = clients.into_iter().map(Option::unwrap).collect();
        let admins: Vec<SocketAddr> = admins.into_iter().map(Option::unwrap).collect();
        Server { client: clients[0], admin: admins[0], clients, admins, spawned: self }
    }
}

/// Waits for `child` to exit, then a moment for the log reader to drain what is left.
fn wait_child(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100));
            return status;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // A failing test shows what the server logged last: a CI run is the only place some
        // failures happen, and its output is all there is to read afterwards.
        if std::thread::panicking() {
            let logs = self.logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let tail = logs.len().saturating_sub(40);
            eprintln!("--- the server's last log lines ---\n{}", logs[tail..].join("\n"));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running `kronotop` process; killed when dropped.
#[derive(Debug)]
pub struct Server {
    /// Member 0's client and admin addresses.
    pub client: SocketAddr,
    pub admin: SocketAddr,
    /// Every member's, by member index.
    pub clients: Vec<SocketAddr>,
    pub admins: Vec<SocketAddr>,
    spawned: Spawned,
}

impl Server {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A server with the default configuration.
    pub fn start() -> Server {
        Builder::default().start()
    }

    pub fn pid(&self) -> u32 {
        self.spawned.child.as_ref().unwrap().id()
    }

    pub fn data_dir(&self) -> &Path {
        &self.spawned.data_dir
    }

    /// Connects to the client port.
    pub fn connect(&self) -> Raw {
        Raw::connect(self.client)
    }

    /// Connects to the admin port.
    pub fn connect_admin(&self) -> Raw {
        Raw::connect(self.admin)
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.client)
    }

    pub fn logs(&self) -> String {
        self.spawned.logs.lock().unwrap().join("\n")
    }

    /// Sends a signal with the `kill` utility and waits for the process to exit.
    pub fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        let pid = self.pid();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        assert!(status.unwrap().success());
        let what = format!("server did not exit after SIG{signal}");
        wait_child(self.spawned.child.as_mut().unwrap(), &what)
    }
}

/// A raw RESP connection with blocking I/O.
#[derive(Debug)]
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends a command as a multibulk array.
    pub fn send_cmd(&mut self, args: &[&str]) {
        self.send(&encode_args(args));
    }

    /// Reads one whole reply and returns its exact bytes; a read that fails (the patience
    /// window passing, say) or the server closing the connection first is an error.
    fn try_read_raw(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some((_, len)) = decode(&self.buf) {
                return Ok(self.buf.drain(..len).collect());
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads one whole reply and returns its exact bytes.
    pub fn read_raw(&mut self) -> Vec<u8> {
        self.try_read_raw().unwrap_or_else(|e| {
            panic!(
                "no reply ({e}: the connection closed or the read failed); got {:?}",
                self.text()
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// Reads one reply as a frame.
    pub fn read(&mut self) -> OwnedFrame {
        let raw = self.read_raw();
        decode(&raw).unwrap().0
    }

    /// Sends a command and returns the exact bytes of its reply, as text.
    pub fn cmd_raw(&mut self, args: &[&str]) -> String {
        self.send_cmd(args);
        String::from_utf8(self.read_raw()).unwrap()
    }

    /// Sends a command and returns its reply as text, or `None` when the server closed the
    /// connection instead of answering (a Redis write that cannot be made durable does that) or
    /// the write or read failed (the patience window passing); the caller reconnects, as a
    /// client would.
    pub fn try_cmd_raw(&mut self, args: &[&str]) -> Option<String> {
        self.stream.write_all(&encode_args(args)).ok()?;
        let reply = self.try_read_raw().ok()?;
        Some(String::from_utf8_lossy(&reply).into_owned())
    }

    /// Sends a command and returns the exact bytes of its reply as text, lossily (for binary
    /// replies such as versionstamps).
    pub fn read_after(&mut self, args: &[&str]) -> String {
        self.send_cmd(args);
        String::from_utf8_lossy(&self.read_raw()).into_owned()
    }

    /// Sends a command and returns its reply.
    pub fn cmd(&mut self, args: &[&str]) -> OwnedFrame {
        self.send_cmd(args);
        self.read()
    }

    /// Everything the server sends until it closes the connection, after what is buffered.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buf);
        let _ = self.stream.read_to_end(&mut rest);
        rest
    }

    /// Whether the server closed the connection (EOF or reset) within the patience window, after
    /// any bytes still buffered.
    pub fn is_closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false;
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }
}

/// Decodes one reply of either protocol: RESP3's decoder reads everything but RESP2's nulls
/// (`$-1`, `*-1`), which RESP2's decoder reads; its frames are converted to RESP3 ones.
pub fn decode(buf: &[u8]) -> Option<(OwnedFrame, usize)> {
    match redis_protocol::resp3::decode::complete::decode(buf) {
        Ok(found) => found,
        Err(_) => {
            let (frame, len) = redis_protocol::resp2::decode::decode(buf).unwrap_or_else(|e| {
                panic!("undecodable reply {:?}: {e:?}", String::from_utf8_lossy(buf))
            })?;
            Some((from_resp2(frame), len))
        }
    }
}

fn from_resp2(frame: redis_protocol::resp2::types::OwnedFrame) -> OwnedFrame {
    use redis_protocol::resp2::types::OwnedFrame as F2;
    match frame {
        F2::SimpleString(data) => OwnedFrame::SimpleString { data, attributes: None },
        F2::Error(data) => OwnedFrame::SimpleError { data, attributes: None },
        F2::Integer(data) => OwnedFrame::Number { data, attributes: None },
        F2::BulkString(data) => OwnedFrame::BlobString { data, attributes: None },
        F2::Array(items) => OwnedFrame::Array {
            data: items.into_iter().map(from_resp2).collect(),
            attributes: None,
        },
        F2::Null => OwnedFrame::Null,
    }
}

/// Encodes a request as a RESP multibulk array.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `encode` for text arguments.
pub fn encode_args(args: &[&str]) -> Vec<u8> {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode(&bytes)
}

/// The text of a bulk, simple or verbatim string frame.
pub fn text(frame: &OwnedFrame) -> String {
    match frame {
        OwnedFrame::BlobString { data, .. }
        | OwnedFrame::SimpleString { data, .. }
        | OwnedFrame::VerbatimString { data, .. } => String::from_utf8_lossy(data).into_owned(),
        other => panic!("not a string: {other:?}"),
    }
}

/// The value of `field` in an `INFO` reply.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_owned()))
}

/// Whether a program is on the PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits until the member at `addr` serves `shards` REDIS shards, all loaded from their Volumes.
pub fn wait_redis(addr: SocketAddr, shards: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut c = Raw::connect(addr);
        let info = text(&c.cmd(&["INFO", "persistence"]));
        let served = info_field(&info, "redis_shards_served").and_then(|v| v.parse::<usize>().ok());
        if served == Some(shards) && info_field(&info, "loading").as_deref() == Some("0") {
            return;
        }
        assert!(Instant::now() < deadline, "REDIS shards not loaded: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Python interpreter with redis-py 5 or newer: `KRONOTOP_PYTHON`, else `python3`. The tests
/// that need it fail without it rather than pass without checking anything; `.ci/run` installs
/// it (`python3 -m pip install "redis>=5,<6"`).
pub fn python_with_redis() -> String {
    let python = std::env::var("KRONOTOP_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    // Run from a neutral directory: the repository's `redis/` folder would shadow the package.
    let ok = Command::new(&python)
        .args([
            "-c",
            "import redis, sys; sys.exit(0 if int(redis.__version__.split('.')[0]) >= 5 else 1)",
        ])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{python} lacks redis-py 5: install it with python3 -m pip install 'redis>=5,<6'");
    python
}

/// Runs a Python script from `tests/py/` with `args`; panics with its output unless it succeeds.
pub fn run_python(python: &str, script: &str, args: &[String]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/py").join(script);
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed:\n{text}");
    text
}

/// A bootstrapped single member with `shards` bucket shards, once inserts work (bucket shards open
/// their volumes when their routes appear).
#[allow(dead_code)]
pub fn bucket_server(shards: u32) -> Server {
    bucket_server_from(
        Server::builder().arg("--bootstrap").set("bucket.shards", &shards.to_string()),
        shards,
    )
}

/// The server `b` starts (a bootstrapping one with `shards` bucket shards), once inserts work on
/// every one of its bucket shards.
#[allow(dead_code)]
pub fn bucket_server_from(b: Builder, shards: u32) -> Server {
    let s = b.start();
    let mut c = s.connect();
    for shard in 0..shards {
        let probe = format!("probe{shard}");
        let deadline = Instant::now() + PATIENCE;
        // `--bootstrap` initialises the cluster and routes the shards right after the member
        // listens; until this member has seen both, BUCKET.CREATE answers that the cluster is not
        // initialised or that the shard has no route.
        loop {
            let created = c.cmd_raw(&["BUCKET.CREATE", &probe, "SHARDS", &shard.to_string()]);
            if created == "+OK\r\n" {
                break;
            }
            let early = created.starts_with("-ERR No route found")
                || created.starts_with("-ERR cluster has not been initialized");
            assert!(early && Instant::now() < deadline, "{created}");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Once the shard has a route naming this member, its first insert works even when the
        // route-change handler has not opened the shard's Volume yet: the insert opens it.
        let inserted = c.cmd_raw(&["BUCKET.INSERT", &probe, "DOCS", "{}"]);
        assert!(inserted.starts_with('*'), "first insert into shard {shard}: {inserted}");
    }
    s
}

/// The cursor id and the items of a RESP2 cursor reply `[cursor, [item, ...]]`.
#[allow(dead_code)]
pub fn cursor_reply(frame: &OwnedFrame) -> (i64, &[OwnedFrame]) {
    let OwnedFrame::Array { data, .. } = frame else { panic!("not an array: {frame:?}") };
    assert_eq!(data.len(), 2, "{frame:?}");
    let OwnedFrame::Number { data: cursor, .. } = &data[0] else { panic!("no cursor: {frame:?}") };
    let OwnedFrame::Array { data: items, .. } = &data[1] else { panic!("no items: {frame:?}") };
    (*cursor, items)
}

/// The documents of a RESP2 query reply, as JSON values.
#[allow(dead_code)]
pub fn cursor_docs(frame: &OwnedFrame) -> (i64, Vec<serde_json::Value>) {
    let (cursor, items) = cursor_reply(frame);
    (cursor, items.iter().map(|e| serde_json::from_str(&text(e)).unwrap()).collect())
}
