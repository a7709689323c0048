//! The life of a `kronotop` process: member id kept in the data directory, one process per
//! member, configuration precedence, log formats, and graceful shutdown on SIGTERM and SIGINT.

#![allow(clippy::unwrap_used)]

mod support;

use redis_protocol::resp3::types::OwnedFrame;
use support::{Server, info_field, text};

fn member_id(server: &Server) -> String {
    let mut c = server.connect();
    info_field(&text(&c.cmd(&["INFO", "server"])), "member_id").unwrap()
}

fn config_value(server: &Server, key: &str) -> String {
    let mut c = server.connect();
    match c.cmd(&["CONFIG", "GET", key]) {
        OwnedFrame::Array { data, .. } => text(&data[1]),
        f => panic!("{f:?}"),
    }
}

#[test]
fn member_id_is_created_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Server::builder().data_dir(dir.path()).start();
    let id = member_id(&first);
    assert_eq!(id.len(), 40);
    assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
    assert!(dir.path().join("development").join(&id).is_dir());

    // A second process on the same member is refused while the first runs.
    let (status, logs) = Server::builder().data_dir(dir.path()).spawn().wait_exit();
    assert_eq!(status.code(), Some(1));
    assert!(logs.contains("another kronotop process is running as member"), "{logs}");

    assert!(first.signal_and_wait("TERM").success());
    let second = Server::builder().data_dir(dir.path()).start();
    assert_eq!(member_id(&second), id);
    // Another cluster name is another member.
    let other =
        Server::builder().data_dir(&dir.path().join("x")).set("cluster.name", "prod").start();
    assert_ne!(member_id(&other), id);
}

#[test]
fn configuration_precedence_is_file_env_flags() {
    let file = "[server]\nmaxclients = 100\nshutdown_timeout_ms = 1234\n";
    let only_file = Server::builder().config(file).start();
    assert_eq!(config_value(&only_file, "maxclients"), "100");
    let env = Server::builder().config(file).env("KRONOTOP_SERVER__MAXCLIENTS", "200").start();
    assert_eq!(config_value(&env, "maxclients"), "200");
    assert_eq!(config_value(&env, "shutdown-timeout-ms"), "1234");
    let flag = Server::builder()
        .config(file)
        .env("KRONOTOP_SERVER__MAXCLIENTS", "200")
        .set("server.maxclients", "300")
        .start();
    assert_eq!(config_value(&flag, "maxclients"), "300");
}

#[test]
fn bad_configuration_exits_with_a_clear_message() {
    let (status, _) = Server::builder().config("[server]\nmaxclient = 5\n").spawn().wait_exit();
    assert_eq!(status.code(), Some(2));
    let (status, _) =
        Server::builder().env("KRONOTOP_NETWORK__CLIENT__PORT", "http").spawn().wait_exit();
    assert_eq!(status.code(), Some(2));
}

#[test]
fn json_and_human_logs() {
    // The kit itself reads JSON logs; a started server proves they parse. Check the fields too.
    let server = Server::start();
    let logs = server.logs();
    let ready = logs.lines().find(|l| l.contains("member ready")).unwrap();
    let json: serde_json::Value = serde_json::from_str(ready).unwrap();
    assert_eq!(json["level"], "INFO");
    assert_eq!(json["fields"]["member_id"].as_str().unwrap().len(), 40);

    let (status, logs) =
        Server::builder().human_logs().set("server.maxclients", "0").spawn().wait_exit();
    assert_eq!(status.code(), Some(2));
    assert!(logs.contains("maxclients must be at least 1"), "{logs}");
}

#[test]
fn sigterm_and_sigint_shut_down_gracefully() {
    for signal in ["TERM", "INT"] {
        let mut server = Server::start();
        let mut idle = server.connect();
        assert_eq!(idle.cmd_raw(&["PING"]), "+PONG\r\n");
        // A pipeline in flight when the signal arrives: every command the server had read is
        // answered whole and in order, then the connection closes; no reply is torn.
        let mut busy = server.connect();
        let mut batch = Vec::new();
        for i in 0..20_000 {
            batch.extend(support::encode(&[b"ECHO", i.to_string().as_bytes()]));
        }
        busy.send(&batch[..batch.len() / 2]);
        assert_eq!(busy.read_raw(), b"$1\r\n0\r\n");
        let client = server.client;
        let status = server.signal_and_wait(signal);
        assert!(status.success(), "SIG{signal}: exit status {status:?}");
        assert!(idle.is_closed());
        let rest = busy.read_to_end();
        let mut offset = 0;
        let mut next = 1;
        while offset < rest.len() {
            let (frame, len) = redis_protocol::resp3::decode::complete::decode(&rest[offset..])
                .unwrap()
                .expect("a torn reply at the end of the stream");
            assert_eq!(text(&frame), next.to_string());
            next += 1;
            offset += len;
        }
        assert!(std::net::TcpStream::connect(client).is_err(), "listener must be closed");
        let logs = server.logs();
        assert!(logs.contains("shutdown complete"), "{logs}");
    }
}

/// A server whose log reader goes away keeps serving (logs to a broken pipe are dropped).
#[test]
fn a_closed_log_pipe_does_not_stop_the_server() {
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, admin) = (free(), free());
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kronotop"))
        .args(["--port", &port.to_string(), "--admin-port", &admin.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + support::PATIENCE;
    let mut c = loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            break support::Raw::connect(addr);
        }
        assert!(std::time::Instant::now() < deadline, "server did not come up");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    for _ in 0..50 {
        assert_eq!(c.cmd_raw(&["PING"]), "+PONG\r\n");
    }
    let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
    assert!(child.wait().unwrap().success());
}

/// The Docker files are valid Compose files: `docker-compose config` (Debian's `docker-compose`,
/// which `.ci/run` installs; no Docker engine is needed to validate) accepts both, and the
/// cluster file publishes only the client ports.
#[test]
fn docker_compose_files_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["docker/docker-compose.yaml", "docker/kronotop-demo.yaml"] {
        let out = std::process::Command::new("docker-compose")
            .current_dir(&root)
            .args(["-f", file, "config"])
            .output()
            .expect("docker-compose (Debian package docker-compose) must be installed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("published: 5484") || text.contains("5484:5484"), "{text}");
        assert!(!text.contains("3320:3320"), "{file} publishes an admin port: {text}");
    }
}

fn unix_client(path: &std::path::Path) -> redis::Connection {
    let client = redis::Client::open(format!("redis+unix://{}", path.display())).unwrap();
    client.get_connection().unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_unix_socket_serves_clients_like_the_client_port() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("k.sock");
    let mut server = Server::builder()
        .arg("--unix-socket")
        .arg(sock.display().to_string())
        .arg("--bootstrap")
        .set("redis.shards", "1")
        .start();
    support::wait_redis(server.client, 1);
    assert_eq!(mode(&sock), 0o700, "only the server's user may connect by default");
    assert_eq!(config_value(&server, "unixsocket"), sock.display().to_string());

    let mut con = unix_client(&sock);
    let () = redis::cmd("SET").arg("via-unix").arg("v1").query(&mut con).unwrap();
    // The same data as the TCP client port.
    let mut tcp = server.connect();
    assert_eq!(text(&tcp.cmd(&["GET", "via-unix"])), "v1");
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut con).unwrap();
    let want = format!("addr={}:0 laddr={}:0 ", sock.display(), sock.display());
    assert!(info.contains(&want), "{info}");
    assert!(info.contains(" flags=U "), "{info}");
    // The client shows in CLIENT LIST beside the TCP one, and CLIENT KILL ADDR finds it. The
    // connections the start-up checks opened are closed, but the server may not have seen them
    // go yet: wait for them to leave the list.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let list = loop {
        let list = text(&tcp.cmd(&["CLIENT", "LIST"]));
        if list.lines().count() == 2 || std::time::Instant::now() > deadline {
            break list;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(list.lines().count(), 2, "{list}");
    assert_eq!(list.lines().filter(|l| l.contains(" flags=U ")).count(), 1, "{list}");
    let addr = format!("{}:0", sock.display());
    assert_eq!(
        tcp.cmd(&["CLIENT", "KILL", "ADDR", &addr]),
        OwnedFrame::Number { data: 1, attributes: None }
    );

    if support::have("redis-cli") {
        let out = std::process::Command::new("redis-cli")
            .arg("-s")
            .arg(&sock)
            .args(["GET", "via-unix"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1");
    }

    // The file goes away with the server.
    assert!(server.signal_and_wait("TERM").success());
    assert!(!sock.exists(), "the socket file is removed at shutdown");
}

#[test]
fn a_unix_socket_asks_for_authentication_and_takes_its_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("k.sock");
    let _server = Server::builder()
        .set("network.unix_socket", &sock.display().to_string())
        .set("network.unix_socket_perm", "0770")
        .set("auth.requirepass", "secret")
        .start();
    assert_eq!(mode(&sock), 0o770);
    let mut con = unix_client(&sock);
    let err = redis::cmd("GET").arg("k").query::<Option<String>>(&mut con).unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");
    let () = redis::cmd("AUTH").arg("secret").query(&mut con).unwrap();
    // Logged in, the command gets as far as the cluster, which no one bootstrapped.
    let err = redis::cmd("GET").arg("k").query::<Option<String>>(&mut con).unwrap_err();
    assert!(err.to_string().contains("cluster has not been initialized"), "{err}");

    let (status, _) = Server::builder().set("network.unix_socket_perm", "800").spawn().wait_exit();
    assert_eq!(status.code(), Some(2), "a mode that is not octal is a configuration error");
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("k.sock");
    // A socket file nothing listens on, as a server killed with SIGKILL leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let server = Server::builder().arg("--unix-socket").arg(sock.display().to_string()).start();
    let pong: String = redis::cmd("PING").query(&mut unix_client(&sock)).unwrap();
    assert_eq!(pong, "PONG");

    // A second server must not take the socket of a live one.
    let (status, logs) =
        Server::builder().arg("--unix-socket").arg(sock.display().to_string()).spawn().wait_exit();
    assert_eq!(status.code(), Some(1));
    assert!(logs.contains("another server is listening on it"), "{logs}");
    let pong: String = redis::cmd("PING").query(&mut unix_client(&sock)).unwrap();
    assert_eq!(pong, "PONG", "the first server still serves its socket");
    drop(server);

    // Nor delete a file that is not a socket.
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let (status, logs) =
        Server::builder().arg("--unix-socket").arg(file.display().to_string()).spawn().wait_exit();
    assert_eq!(status.code(), Some(1));
    assert!(logs.contains("not a socket"), "{logs}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn each_member_of_a_process_gets_its_own_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("k.sock");
    let _server =
        Server::builder().members(2).arg("--unix-socket").arg(sock.display().to_string()).start();
    let second = dir.path().join("k.sock.1");
    let mut ids = Vec::new();
    for path in [&sock, &second] {
        let info: String = redis::cmd("INFO").arg("server").query(&mut unix_client(path)).unwrap();
        ids.push(info_field(&info, "member_id").unwrap());
    }
    assert_ne!(ids[0], ids[1], "each socket reaches its own member");
}
