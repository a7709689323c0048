//! The wire protocol against a real `kronotop` process: pipelining, inline commands, every
//! protocol limit (exact error, connection closed, server still serving), memory not allocated for
//! declared lengths, RESP2/RESP3 encodings, and 1,000 concurrent connections.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;

use support::{Raw, Server, encode, info_field, text};

#[test]
fn pipelining_ten_thousand_commands_in_one_write() {
    let server = Server::start();
    let mut c = server.connect();
    let mut batch = Vec::new();
    for i in 0..10_000 {
        batch.extend(encode(&[b"ECHO", i.to_string().as_bytes()]));
    }
    c.send(&batch);
    for i in 0..10_000 {
        assert_eq!(c.read_raw(), format!("${}\r\n{i}\r\n", i.to_string().len()).into_bytes());
    }
    assert_eq!(c.cmd_raw(&["PING"]), "+PONG\r\n");
}

#[test]
fn inline_commands_are_accepted() {
    let server = Server::start();
    let mut c = server.connect();
    c.send(b"PING\r\n");
    assert_eq!(c.read_raw(), b"+PONG\r\n");
    c.send(b"ECHO \"hello world\"\n");
    assert_eq!(c.read_raw(), b"$11\r\nhello world\r\n");
    c.send(b"\r\n  \r\necho 'it\\'s'\r\n");
    assert_eq!(c.read_raw(), b"$4\r\nit's\r\n");
}

/// Each case: bytes a client sends, and the exact error line the server must answer before it
/// closes the connection.
fn limit_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut inline = vec![b'A'; 64 * 1024 + 1];
    inline.push(b' ');
    let mut mbulk = b"*".to_vec();
    mbulk.extend(std::iter::repeat_n(b'1', 64 * 1024 + 1));
    let mut bulk_count = b"*1\r\n$".to_vec();
    bulk_count.extend(std::iter::repeat_n(b'1', 64 * 1024 + 1));
    vec![
        (
            "bulk over proto-max-bulk-len",
            b"*1\r\n$536870913\r\n".to_vec(),
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            "negative bulk length",
            b"*1\r\n$-5\r\n".to_vec(),
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            "malformed bulk length",
            b"*1\r\n$12a\r\n".to_vec(),
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            "multibulk over 1048576",
            b"*1048577\r\n".to_vec(),
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            "malformed multibulk",
            b"*x1\r\n".to_vec(),
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        ("inline over 64 KiB", inline, "-ERR Protocol error: too big inline request\r\n"),
        (
            "multibulk count line over 64 KiB",
            mbulk,
            "-ERR Protocol error: too big mbulk count string\r\n",
        ),
        (
            "bulk count line over 64 KiB",
            bulk_count,
            "-ERR Protocol error: too big bulk count string\r\n",
        ),
        (
            "nested array",
            b"*2\r\n$4\r\nECHO\r\n*1\r\n$1\r\na\r\n".to_vec(),
            "-ERR Protocol error: expected '$', got '*'\r\n",
        ),
        (
            "unbalanced quotes",
            b"ECHO \"abc\r\n".to_vec(),
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ]
}

#[test]
fn protocol_limits_answer_close_and_spare_other_clients() {
    let server = Server::start();
    let mut bystander = server.connect();
    assert_eq!(bystander.cmd_raw(&["PING"]), "+PONG\r\n");
    for (name, input, want) in limit_cases() {
        let mut c = server.connect();
        c.send(&input);
        let got = String::from_utf8(c.read_raw()).unwrap();
        assert_eq!(got, want, "case: {name}");
        assert!(c.is_closed(), "case {name}: connection must be closed");
        assert_eq!(bystander.cmd_raw(&["ECHO", name]), format!("${}\r\n{name}\r\n", name.len()));
    }
    let mut info = server.connect();
    let stats = text(&info.cmd(&["INFO", "stats"]));
    let errors: usize = info_field(&stats, "protocol_errors").unwrap().parse().unwrap();
    assert_eq!(errors, limit_cases().len());
}

#[test]
fn replies_before_a_protocol_error_are_delivered() {
    let server = Server::start();
    let mut c = server.connect();
    c.send(b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n*1\r\n$-1\r\n*1\r\n$4\r\nPING\r\n");
    assert_eq!(c.read_raw(), b"+PONG\r\n");
    assert_eq!(c.read_raw(), b"$1\r\nx\r\n");
    assert_eq!(c.read_raw(), b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(c.is_closed());
}

#[test]
fn proto_max_bulk_len_is_enforced_after_config_set() {
    let server = Server::start();
    let mut admin = server.connect();
    assert_eq!(admin.cmd_raw(&["CONFIG", "SET", "proto-max-bulk-len", "1048576"]), "+OK\r\n");
    let mut c = server.connect();
    let exactly = vec![b'x'; 1024 * 1024];
    c.send(&encode(&[b"ECHO", &exactly]));
    let reply = c.read_raw();
    assert_eq!(reply.len(), 1024 * 1024 + "$1048576\r\n\r\n".len());
    c.send(b"*2\r\n$4\r\nECHO\r\n$1048577\r\n");
    assert_eq!(c.read_raw(), b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(c.is_closed());
}

#[test]
fn unauthenticated_clients_get_small_limits() {
    let server = Server::builder().set("auth.requirepass", "devpass").start();
    let mut c = server.connect();
    let eleven: Vec<&[u8]> = vec![b"PING"; 11];
    c.send(&encode(&eleven));
    assert_eq!(c.read_raw(), b"-ERR Protocol error: unauthenticated multibulk length\r\n");
    assert!(c.is_closed());

    let mut c = server.connect();
    c.send(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n");
    assert_eq!(c.read_raw(), b"-ERR Protocol error: unauthenticated bulk length\r\n");
    assert!(c.is_closed());

    // Once authenticated, the ordinary limits apply.
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["AUTH", "devpass"]), "+OK\r\n");
    let big = vec![b'y'; 20_000];
    let many: Vec<&[u8]> = std::iter::once(&b"ECHO"[..]).chain([&big[..]]).collect();
    c.send(&encode(&many));
    assert_eq!(c.read_raw().len(), 20_000 + "$20000\r\n\r\n".len());
}

#[test]
fn declared_lengths_are_not_allocated_before_the_bytes_arrive() {
    let server = Server::start();
    let mut probe = server.connect();
    let rss = |probe: &mut Raw| -> u64 {
        let info = text(&probe.cmd(&["INFO", "memory"]));
        info_field(&info, "used_memory_rss").unwrap().parse().unwrap()
    };
    let before = rss(&mut probe);
    // 40 clients each announce a 512 MB argument and send a few bytes of it: 20 GiB declared.
    let mut liars = Vec::new();
    for _ in 0..40 {
        let mut c = server.connect();
        c.stream.write_all(b"*2\r\n$4\r\nECHO\r\n$536870912\r\nonly-a-few-bytes").unwrap();
        liars.push(c);
    }
    assert_eq!(probe.cmd_raw(&["PING"]), "+PONG\r\n");
    let after = rss(&mut probe);
    assert!(
        after < before + 64 * 1024 * 1024,
        "RSS grew from {before} to {after} bytes for requests that declared 20 GiB"
    );
}

#[test]
fn resp2_and_resp3_encodings() {
    let server = Server::start();
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["CLIENT", "GETNAME"]), "$-1\r\n");
    let attrs = c.cmd_raw(&["SESSION.ATTRIBUTE", "LIST"]);
    assert!(attrs.starts_with("*8\r\n$10\r\nreply_type\r\n"), "{attrs}");
    let info = c.cmd_raw(&["CLIENT", "INFO"]);
    assert!(info.starts_with('$'), "CLIENT INFO in RESP2 is a bulk string: {info}");

    c.cmd(&["HELLO", "3"]);
    assert_eq!(c.cmd_raw(&["CLIENT", "GETNAME"]), "_\r\n");
    let attrs = c.cmd_raw(&["SESSION.ATTRIBUTE", "LIST"]);
    assert!(attrs.starts_with("%4\r\n$10\r\nreply_type\r\n"), "{attrs}");
    let info = c.cmd_raw(&["CLIENT", "INFO"]);
    assert!(info.starts_with('=') && info.contains("txt:id="), "{info}");
    assert_eq!(c.cmd_raw(&["PING"]), "+PONG\r\n");
    assert_eq!(c.cmd_raw(&["PING", "hi"]), "$2\r\nhi\r\n");
}

#[test]
fn a_thousand_concurrent_connections() {
    let _ = rlimit::increase_nofile_limit(8192);
    let server = Server::start();
    let mut clients: Vec<Raw> = (0..1000).map(|_| server.connect()).collect();
    // Every client sends before any reads, so all 1,000 are open and waiting at once.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_cmd(&["ECHO", &i.to_string()]);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.read_raw(), format!("${}\r\n{i}\r\n", i.to_string().len()).into_bytes());
    }
    let info = text(&clients[0].cmd(&["INFO", "clients"]));
    assert_eq!(info_field(&info, "connected_clients").unwrap(), "1000");
}
