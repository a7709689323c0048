//! TLS on the client and admin ports and between members, with a test CA made by `openssl`:
//! TLS clients (ours and `redis-cli --tls`) are served, plain-text clients are refused, the admin
//! port refuses clients without a certificate from the CA, and members replicate over TLS.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Builder, PATIENCE, Server, have};

/// A CA, a certificate for 127.0.0.1 signed by it (servers and members use it, and it is also a
/// client certificate), a client certificate, and a client certificate of another CA.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        assert!(have("openssl"), "the TLS tests need the openssl command (Debian: openssl)");
        let dir = tempfile::tempdir().unwrap();
        let script = r#"
set -e
key() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null; }
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' > leaf.ext
for ca in ca rogue-ca; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca.key" -out "$ca.crt" -days 2 -subj "/CN=$ca" 2>/dev/null
done
for name in server client; do
  key "$name"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" -days 2 -extfile leaf.ext 2>/dev/null
done
key rogue
openssl x509 -req -in rogue.csr -CA rogue-ca.crt -CAkey rogue-ca.key -CAcreateserial -out rogue.crt -days 2 -extfile leaf.ext 2>/dev/null
"#;
        let out =
            Command::new("sh").arg("-c").arg(script).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    /// A builder with TLS on both ports.
    fn server(&self) -> Builder {
        Server::builder()
            .set("network.client.tls", "true")
            .set("network.admin.tls", "true")
            .set("tls.cert_file", &self.p("server.crt"))
            .set("tls.key_file", &self.p("server.key"))
            .set("tls.ca_file", &self.p("ca.crt"))
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection trusting `ca`, presenting `identity` (a name in the certificate folder).
fn tls(addr: SocketAddr, certs: &Certs, identity: Option<&str>) -> Tls {
    let cert_key = identity.map(|n| (certs.p(&format!("{n}.crt")), certs.p(&format!("{n}.key"))));
    let config = kronotop_server::tls::client_config(
        &certs.p("ca.crt"),
        cert_key.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    rustls::StreamOwned::new(rustls::ClientConnection::new(Arc::clone(&config), name).unwrap(), tcp)
}

/// Sends one command and reads its whole reply (framed by the kit's decoder), as raw RESP text;
/// an I/O error (a refused handshake, a closed connection) comes back as `Err`.
fn call(stream: &mut impl ReadWrite, args: &[&str]) -> std::io::Result<String> {
    stream.write_all(&support::encode_args(args))?;
    stream.flush()?;
    let mut buf = Vec::new();
    loop {
        if let Some((_, len)) = support::decode(&buf) {
            return Ok(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk)? {
            0 => return Err(std::io::Error::other("connection closed")),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The `field` of a RESP2 flat-map reply, as text.
fn field(reply: &str, name: &str) -> String {
    let lines: Vec<&str> = reply.split("\r\n").collect();
    let at = lines.iter().position(|l| *l == name).unwrap_or_else(|| panic!("{name} in {reply}"));
    let value = lines[at + 1];
    if value.starts_with('$') { lines[at + 2].to_owned() } else { value[1..].to_owned() }
}

#[test]
fn tls_clients_are_served_and_others_refused() {
    let certs = Certs::new();
    let server = certs.server().start();

    // A TLS client on the client port needs no certificate (tls_client_certs = no).
    let mut c = tls(server.client, &certs, None);
    assert_eq!(call(&mut c, &["PING"]).unwrap(), "+PONG\r\n");
    assert_eq!(call(&mut c, &["ECHO", "over tls"]).unwrap(), "$8\r\nover tls\r\n");

    // A plain-text client gets no reply: its bytes fail the handshake.
    let mut plain = TcpStream::connect(server.client).unwrap();
    plain.set_read_timeout(Some(PATIENCE)).unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("PONG"), "{got:?}");
    assert!(got.is_empty() || got[0] == 0x15, "a TLS alert or nothing: {got:?}");

    // The admin port requires a certificate from the CA.
    let mut anonymous = tls(server.admin, &certs, None);
    assert!(call(&mut anonymous, &["PING"]).is_err(), "no client certificate was accepted");
    let mut rogue = tls(server.admin, &certs, Some("rogue"));
    assert!(call(&mut rogue, &["PING"]).is_err(), "a certificate of another CA was accepted");
    let mut admin = tls(server.admin, &certs, Some("client"));
    assert_eq!(call(&mut admin, &["PING"]).unwrap(), "+PONG\r\n");

    // The server goes on serving everyone else.
    assert_eq!(call(&mut c, &["ECHO", "still here"]).unwrap(), "$10\r\nstill here\r\n");

    if have("redis-cli") {
        let cli = |args: &[&str]| {
            let out = Command::new("redis-cli").args(args).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr)
        };
        let port = server.client.port().to_string();
        let admin_port = server.admin.port().to_string();
        let ca = certs.p("ca.crt");
        assert_eq!(cli(&["--tls", "--cacert", &ca, "-p", &port, "PING"]), "PONG\n");
        assert!(!cli(&["-p", &port, "PING"]).contains("PONG"));
        assert!(!cli(&["--tls", "--cacert", &ca, "-p", &admin_port, "PING"]).contains("PONG"));
        let (cert, key) = (certs.p("client.crt"), certs.p("client.key"));
        assert_eq!(
            cli(&[
                "--tls",
                "--cacert",
                &ca,
                "--cert",
                &cert,
                "--key",
                &key,
                "-p",
                &admin_port,
                "PING"
            ]),
            "PONG\n"
        );
    }
}

#[test]
fn client_certificates_can_be_required_on_the_client_port() {
    let certs = Certs::new();
    let server = certs.server().set("network.client.tls_client_certs", "required").start();
    assert!(call(&mut tls(server.client, &certs, None), &["PING"]).is_err());
    assert_eq!(
        call(&mut tls(server.client, &certs, Some("client")), &["PING"]).unwrap(),
        "+PONG\r\n"
    );
    // `optional` takes both, but still refuses a certificate of another CA.
    let server = certs.server().set("network.client.tls_client_certs", "optional").start();
    assert_eq!(call(&mut tls(server.client, &certs, None), &["PING"]).unwrap(), "+PONG\r\n");
    assert!(call(&mut tls(server.client, &certs, Some("rogue")), &["PING"]).is_err());
}

#[test]
fn a_tls_setup_that_cannot_work_stops_the_start() {
    let certs = Certs::new();
    let (status, logs) = Server::builder().set("network.client.tls", "true").spawn().wait_exit();
    assert!(!status.success());
    assert!(logs.contains("network.client.tls needs tls.cert_file and tls.key_file"), "{logs}");
    let (status, logs) =
        certs.server().set("tls.key_file", &certs.p("client.key")).spawn().wait_exit();
    assert!(!status.success());
    assert!(logs.contains("cannot set up TLS"), "{logs}");
    let missing = Path::new("/nonexistent/ca.pem").to_str().unwrap().to_owned();
    let (status, logs) = certs.server().set("tls.ca_file", &missing).spawn().wait_exit();
    assert!(!status.success());
    assert!(logs.contains("/nonexistent/ca.pem"), "{logs}");
}

/// Two members whose admin ports speak TLS: `kronotop bootstrap` reaches them over TLS, and the
/// standby copies the primary's volume over TLS.
#[test]
fn members_bootstrap_and_replicate_over_tls() {
    let certs = Certs::new();
    let server =
        certs.server().members(2).set("bucket.shards", "1").set("redis.shards", "1").start();
    let (a0, a1) = (server.admins[0].to_string(), server.admins[1].to_string());
    let out = Command::new(env!("CARGO_BIN_EXE_kronotop"))
        .args(["bootstrap", "--primary", "BUCKET", &format!("{a0}=0")])
        .args(["--primary", "REDIS", &format!("{a0}=0"), "--standby", "BUCKET", &format!("{a1}=0")])
        .args(["--tls-ca", &certs.p("ca.crt"), "--tls-cert", &certs.p("client.crt")])
        .args(["--tls-key", &certs.p("client.key")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Without the client certificate, bootstrap cannot talk to the admin port.
    let refused = Command::new(env!("CARGO_BIN_EXE_kronotop"))
        .args([
            "bootstrap",
            "--primary",
            "BUCKET",
            &format!("{a0}=0"),
            "--tls-ca",
            &certs.p("ca.crt"),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());

    let mut c = tls(server.clients[0], &certs, None);
    let deadline = Instant::now() + PATIENCE;
    while call(&mut c, &["BUCKET.CREATE", "t", "IF-NOT-EXISTS"]).unwrap() != "+OK\r\n" {
        assert!(Instant::now() < deadline, "the bucket shard never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..10 {
        let doc = format!("{{n: {i}}}");
        loop {
            let reply = call(&mut c, &["BUCKET.INSERT", "t", "DOCS", &doc]).unwrap();
            if reply.starts_with("*1\r\n$24\r\n") {
                break;
            }
            assert!(Instant::now() < deadline, "{reply}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The standby's copy catches up: it reads from the primary over TLS.
    let mut standby = tls(server.admins[1], &certs, Some("client"));
    loop {
        let state = call(&mut standby, &["VOLUME.STATS", "bucket-shard-0", "REPLICATION"]).unwrap();
        let received: u64 = field(&state, "bytes_received").parse().unwrap();
        if field(&state, "caught_up") == "1" && field(&state, "lag_bytes") == "0" && received > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the standby never caught up over TLS: {state}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
