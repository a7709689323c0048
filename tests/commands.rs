//! Every connection, server and session command against a real `kronotop` process, in RESP2 and
//! RESP3, with the scenarios S1, S2, S3, S5 and S15 of the reference (section 8.3), and real
//! clients: the `redis` crate and `redis-cli`.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use redis_protocol::resp3::types::OwnedFrame;
use support::{Server, have, info_field, text};

/// S1: PING/ECHO.
#[test]
fn s1_ping_and_echo() {
    let server = Server::start();
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["PING"]), "+PONG\r\n");
    assert_eq!(c.cmd_raw(&["PING", "hello world"]), "$11\r\nhello world\r\n");
    assert_eq!(c.cmd_raw(&["ECHO", "Hello Kronotop"]), "$14\r\nHello Kronotop\r\n");
    assert_eq!(
        c.cmd_raw(&["PING", "a", "b"]),
        "-ERR wrong number of arguments for 'PING' command\r\n"
    );
    assert_eq!(c.cmd_raw(&["ECHO"]), "-ERR wrong number of arguments for 'ECHO' command\r\n");
    assert_eq!(
        c.cmd_raw(&["ECHO", "a", "b"]),
        "-ERR wrong number of arguments for 'ECHO' command\r\n"
    );
    // The admin port serves them too.
    let mut a = server.connect_admin();
    assert_eq!(a.cmd_raw(&["PING"]), "+PONG\r\n");
    assert_eq!(a.cmd_raw(&["ECHO", "x"]), "$1\r\nx\r\n");
}

/// S2: HELLO negotiation.
#[test]
fn s2_hello_negotiation() {
    let server = Server::start();
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["HELLO", "4"]), "-NOPROTO unsupported protocol version\r\n");
    assert_eq!(
        c.cmd_raw(&["HELLO", "three"]),
        "-ERR Protocol version is not an integer or out of range\r\n"
    );
    let id = match c.cmd(&["CLIENT", "ID"]) {
        OwnedFrame::Number { data, .. } => data,
        other => panic!("{other:?}"),
    };
    let version = env!("CARGO_PKG_VERSION");
    let hello3 = c.cmd_raw(&["HELLO", "3"]);
    assert_eq!(
        hello3,
        format!(
            "%7\r\n$6\r\nserver\r\n$8\r\nKronotop\r\n$7\r\nversion\r\n${}\r\n{version}\r\n\
             $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:{id}\r\n$4\r\nmode\r\n$7\r\ncluster\r\n\
             $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
            version.len()
        )
    );
    let hello2 = c.cmd_raw(&["HELLO", "2", "SETNAME", "app"]);
    assert_eq!(
        hello2,
        format!(
            "*14\r\n+server\r\n+Kronotop\r\n+version\r\n+{version}\r\n+proto\r\n:2\r\n+id\r\n:{id}\r\n\
             +mode\r\n+cluster\r\n+role\r\n+master\r\n+modules\r\n*0\r\n"
        )
    );
    assert_eq!(c.cmd_raw(&["CLIENT", "GETNAME"]), "$3\r\napp\r\n");
    assert_eq!(
        c.cmd_raw(&["HELLO", "3", "AUTH", "x"]),
        "-ERR Syntax error in HELLO option 'AUTH'\r\n"
    );
    assert_eq!(c.cmd_raw(&["HELLO", "3", "FOO"]), "-ERR Syntax error in HELLO option 'FOO'\r\n");
    assert_eq!(
        c.cmd_raw(&["HELLO", "3", "SETNAME", "a b"]),
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    // None of the failed HELLOs switched the protocol.
    assert_eq!(c.cmd_raw(&["CLIENT", "GETNAME"]), "$3\r\napp\r\n");
    // HELLO with no argument means protocol 3 (reference section 2.1).
    assert!(c.cmd_raw(&["HELLO"]).starts_with("%7\r\n"));
    assert_eq!(c.cmd_raw(&["CLIENT", "GETNAME"]), "$3\r\napp\r\n");
    assert_eq!(c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", "limit", "7"]), "+OK\r\n");
    assert!(c.cmd_raw(&["SESSION.ATTRIBUTE", "LIST"]).starts_with('%'));
}

/// S3: unknown command and arity, plus the other central checks.
#[test]
fn s3_unknown_command_arity_and_central_checks() {
    let server = Server::start();
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["FOOBAR"]), "-ERR unknown command 'FOOBAR'\r\n");
    assert_eq!(c.cmd_raw(&["TICK"]), "-ERR wrong number of arguments for 'TICK' command\r\n");
    assert_eq!(c.cmd_raw(&["tick", "FRESH"]), "-ERR cluster has not been initialized yet\r\n");
    assert_eq!(c.cmd_raw(&["CLIENT"]), "-ERR wrong number of arguments for 'CLIENT' command\r\n");
    assert_eq!(
        c.cmd_raw(&["CLIENT", "SETNAME"]),
        "-ERR wrong number of arguments for 'CLIENT|SETNAME' command\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["CLIENT", "FLY"]),
        "-ERR unknown subcommand 'FLY'. Try CLIENT HELP.\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["COMMAND", "FLY"]),
        "-ERR unknown subcommand 'FLY'. Try COMMAND HELP.\r\n"
    );
    // Listener checks: AUTH and TIME are client-port commands.
    let mut a = server.connect_admin();
    assert_eq!(a.cmd_raw(&["TIME"]), "-ERR command 'TIME' is served on the client port only\r\n");
    assert_eq!(
        a.cmd_raw(&["AUTH", "x"]),
        "-ERR command 'AUTH' is served on the client port only\r\n"
    );
    // The connection survives every error.
    assert_eq!(c.cmd_raw(&["PING"]), "+PONG\r\n");
}

/// S5 with requirepass "devpass". SESSION.CLOSE keeps authentication (our decision, reference
/// opening section), so the last PING answers PONG where the original answered NOAUTH.
#[test]
fn s5_authentication() {
    let server = Server::builder().env("KRONOTOP_AUTH__REQUIREPASS", "devpass").start();
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["PING"]), "-NOAUTH Authentication required.\r\n");
    assert_eq!(
        c.cmd_raw(&["AUTH", "wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(c.cmd_raw(&["AUTH", "devpass"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["PING"]), "+PONG\r\n");
    assert_eq!(c.cmd_raw(&["SESSION.CLOSE"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["PING"]), "+PONG\r\n");

    // Arity is checked before authentication, as in Redis.
    let mut d = server.connect();
    assert_eq!(d.cmd_raw(&["ECHO"]), "-ERR wrong number of arguments for 'ECHO' command\r\n");
    assert_eq!(d.cmd_raw(&["ECHO", "x"]), "-NOAUTH Authentication required.\r\n");
    assert!(d.cmd_raw(&["HELLO", "3"]).starts_with("-NOAUTH HELLO must be called with the client"));
    assert_eq!(
        d.cmd_raw(&["HELLO", "3", "AUTH", "default", "nope"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert!(d.cmd_raw(&["HELLO", "3", "AUTH", "default", "devpass"]).starts_with("%7\r\n"));
    assert_eq!(d.cmd_raw(&["PING"]), "+PONG\r\n");

    // The password is shown hashed, never in clear.
    let reply = d.cmd_raw(&["CONFIG", "GET", "requirepass"]);
    assert!(reply.contains("sha256$") && !reply.contains("devpass"), "{reply}");

    // A QUIT is allowed without authentication.
    let mut e = server.connect();
    assert_eq!(e.cmd_raw(&["QUIT"]), "+OK\r\n");
    assert!(e.is_closed());
}

#[test]
fn named_users_and_password_changes() {
    let server = Server::builder()
        .config("[auth]\nrequirepass = \"devpass\"\n[auth.users]\nalice = \"wonder land\"\n")
        .start();
    let mut c = server.connect();
    assert_eq!(
        c.cmd_raw(&["AUTH", "alice", "devpass"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["AUTH", "bob", "wonder land"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(c.cmd_raw(&["AUTH", "alice", "wonder land"]), "+OK\r\n");
    assert!(text(&c.cmd(&["CLIENT", "INFO"])).contains(" user=alice "));
    assert_eq!(c.cmd_raw(&["AUTH", "a", "b", "c"]), "-ERR syntax error\r\n");

    // CONFIG SET requirepass takes effect for new connections.
    assert_eq!(c.cmd_raw(&["CONFIG", "SET", "requirepass", "newpass"]), "+OK\r\n");
    let mut d = server.connect();
    assert_eq!(
        d.cmd_raw(&["AUTH", "devpass"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(d.cmd_raw(&["AUTH", "default", "newpass"]), "+OK\r\n");
}

#[test]
fn auth_without_a_password_configured() {
    let server = Server::start();
    let mut c = server.connect();
    assert_eq!(
        c.cmd_raw(&["AUTH", "x"]),
        "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n"
    );
    assert_eq!(c.cmd_raw(&["AUTH", "default", "anything"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["AUTH", "alice", "x"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
}

/// S15 with our defaults (reference opening section: json, json, 100, hex).
#[test]
fn s15_session_attributes() {
    let server = Server::start();
    let mut c = server.connect();
    let list = "*8\r\n$10\r\nreply_type\r\n$4\r\njson\r\n$10\r\ninput_type\r\n$4\r\njson\r\n\
                $5\r\nlimit\r\n:100\r\n$16\r\nobject_id_format\r\n$3\r\nhex\r\n";
    assert_eq!(c.cmd_raw(&["SESSION.ATTRIBUTE", "LIST"]), list);
    assert_eq!(
        c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", "limit", "0"]),
        "-ERR 'limit' must be greater than 0\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", "reply_type", "xml"]),
        "-ERR Invalid reply type: xml\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", "unknown_attr", "v"]),
        "-ERR Invalid session attribute: 'unknown_attr'\r\n"
    );
    assert_eq!(c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", "limit", "50"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", "LIMIT", "abc"]),
        "-ERR value is not a int or out of range\r\n"
    );
    assert_eq!(c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", "input_type", "BSON"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", "object_id_format", "bytes"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", "object_id_format", "b64"]),
        "-ERR Invalid versionstamp format: b64\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", "input_type", "csv"]),
        "-ERR Invalid input type: csv\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", "limit"]),
        "-ERR invalid number of parameters\r\n"
    );
    assert_eq!(c.cmd_raw(&["SESSION.ATTRIBUTE", "GET"]), "-ERR Invalid subcommand status: GET\r\n");
    let changed = c.cmd_raw(&["SESSION.ATTRIBUTE", "LIST"]);
    assert!(
        changed.contains(":50\r\n")
            && changed.contains("$4\r\nbson\r\n")
            && changed.contains("$5\r\nbytes\r\n"),
        "{changed}"
    );
    c.cmd(&["CLIENT", "SETNAME", "keeper"]);
    assert_eq!(c.cmd_raw(&["SESSION.CLOSE"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["SESSION.ATTRIBUTE", "LIST"]), list);
    // SESSION.CLOSE keeps the client name and protocol (reference opening section).
    assert_eq!(c.cmd_raw(&["CLIENT", "GETNAME"]), "$6\r\nkeeper\r\n");
    // Defaults come from the configuration.
    let configured = Server::builder().set("session_attributes.limit", "25").start();
    let mut d = configured.connect();
    assert!(d.cmd_raw(&["SESSION.ATTRIBUTE", "LIST"]).contains(":25\r\n"));
}

#[test]
fn client_subcommands() {
    let server = Server::start();
    let mut c = server.connect();
    let mut other = server.connect();
    let other_id = match other.cmd(&["CLIENT", "ID"]) {
        OwnedFrame::Number { data, .. } => data,
        f => panic!("{f:?}"),
    };
    assert_eq!(c.cmd_raw(&["CLIENT", "GETNAME"]), "$-1\r\n");
    assert_eq!(c.cmd_raw(&["CLIENT", "SETNAME", "worker-1"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["CLIENT", "GETNAME"]), "$8\r\nworker-1\r\n");
    assert_eq!(
        c.cmd_raw(&["CLIENT", "SETNAME", "has space"]),
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(c.cmd_raw(&["CLIENT", "SETINFO", "LIB-NAME", "mylib"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["CLIENT", "SETINFO", "lib-ver", "1.2.3"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["CLIENT", "SETINFO", "color", "red"]),
        "-ERR Unrecognized option 'color'\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["CLIENT", "SETINFO", "lib-name"]),
        "-ERR wrong number of arguments for 'CLIENT|SETINFO' command\r\n"
    );

    let info = text(&c.cmd(&["CLIENT", "INFO"]));
    for field in [
        "name=worker-1 ",
        "lib-name=mylib ",
        "lib-ver=1.2.3 ",
        "cmd=client|info ",
        "resp=2 ",
        "port=client",
    ] {
        assert!(info.contains(field), "missing {field} in {info}");
    }
    let list = text(&c.cmd(&["CLIENT", "LIST"]));
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.contains(&format!("id={other_id} ")));
    let only = text(&c.cmd(&["CLIENT", "LIST", "ID", &other_id.to_string()]));
    assert_eq!(only.lines().count(), 1);
    assert_eq!(text(&c.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"])), "");
    assert_eq!(
        c.cmd_raw(&["CLIENT", "LIST", "TYPE", "weird"]),
        "-ERR Unknown client type 'weird'\r\n"
    );

    // Kill the other client by id: it is disconnected, we are not.
    assert_eq!(c.cmd_raw(&["CLIENT", "KILL", "ID", &other_id.to_string()]), ":1\r\n");
    assert!(other.is_closed());
    assert_eq!(c.cmd_raw(&["CLIENT", "KILL", "ID", "999999"]), ":0\r\n");
    assert_eq!(c.cmd_raw(&["CLIENT", "KILL", "127.0.0.1:1"]), "-ERR No such client\r\n");
    // The old form by address.
    let mut third = server.connect();
    let addr = third.stream.local_addr().unwrap().to_string();
    third.cmd(&["PING"]);
    assert_eq!(c.cmd_raw(&["CLIENT", "KILL", &addr]), "+OK\r\n");
    assert!(third.is_closed());
    // SKIPME yes (the default) spares the caller; SKIPME no does not, after replying.
    let mine = c.stream.local_addr().unwrap().to_string();
    assert_eq!(c.cmd_raw(&["CLIENT", "KILL", "ADDR", &mine]), ":0\r\n");
    assert_eq!(c.cmd_raw(&["CLIENT", "KILL", "ADDR", &mine, "SKIPME", "no"]), ":1\r\n");
    assert!(c.is_closed());
}

#[test]
fn info_sections_hold_real_figures() {
    let server = Server::start();
    let mut c = server.connect();
    // A client counts once the server has accepted it; a reply proves that.
    let mut second = server.connect();
    assert_eq!(second.cmd_raw(&["PING"]), "+PONG\r\n");
    let all = text(&c.cmd(&["INFO"]));
    for section in ["# Server", "# Clients", "# Memory", "# Stats", "# Keyspace", "# Cluster"] {
        assert!(all.contains(section), "missing {section}");
    }
    assert_eq!(info_field(&all, "connected_clients").unwrap(), "2");
    assert_eq!(info_field(&all, "tcp_port").unwrap(), server.client.port().to_string());
    assert_eq!(info_field(&all, "process_id").unwrap(), server.pid().to_string());
    let rss: u64 = info_field(&all, "used_memory_rss").unwrap().parse().unwrap();
    assert!(rss > 1024 * 1024, "{rss}");
    let before: u64 = info_field(&all, "total_commands_processed").unwrap().parse().unwrap();
    for _ in 0..5 {
        c.cmd(&["PING"]);
    }
    let stats = text(&c.cmd(&["INFO", "STATS"]));
    assert!(!stats.contains("# Server"));
    let after: u64 = info_field(&stats, "total_commands_processed").unwrap().parse().unwrap();
    assert_eq!(after, before + 6, "five PINGs and the INFO itself");
    c.cmd(&["HELLO", "3"]);
    assert!(c.cmd_raw(&["INFO", "cluster"]).starts_with('='));
}

#[test]
fn command_is_generated_from_the_table() {
    let server = Server::start();
    let mut c = server.connect();
    let count = match c.cmd(&["COMMAND", "COUNT"]) {
        OwnedFrame::Number { data, .. } => data,
        f => panic!("{f:?}"),
    };
    let all = match c.cmd(&["COMMAND"]) {
        OwnedFrame::Array { data, .. } => data,
        f => panic!("{f:?}"),
    };
    assert_eq!(all.len() as i64, count);
    let ping = c.cmd_raw(&["COMMAND", "INFO", "ping", "nosuch"]);
    assert!(
        ping.starts_with("*2\r\n*10\r\n$4\r\nping\r\n:-1\r\n*3\r\n+fast\r\n+loading\r\n+stale\r\n:0\r\n:0\r\n:0\r\n"),
        "{ping}"
    );
    assert!(ping.ends_with("$-1\r\n"), "unknown command gives nil: {ping}");
    let client = c.cmd_raw(&["COMMAND", "INFO", "client|kill"]);
    assert!(client.contains("$11\r\nclient|kill\r\n:-3\r\n"), "{client}");
    let docs = c.cmd_raw(&["COMMAND", "DOCS", "echo"]);
    assert!(docs.contains("summary") && docs.contains("Returns the given string."), "{docs}");
    let list = c.cmd_raw(&["COMMAND", "LIST", "FILTERBY", "PATTERN", "session*"]);
    assert_eq!(list, "*2\r\n$17\r\nsession.attribute\r\n$13\r\nsession.close\r\n");
    let conn = c.cmd_raw(&["COMMAND", "LIST", "FILTERBY", "ACLCAT", "connection"]);
    assert!(conn.contains("ping") && !conn.contains("$4\r\ntime\r\n"), "{conn}");
    assert_eq!(c.cmd_raw(&["COMMAND", "LIST", "FILTERBY", "MODULE", "x"]), "*0\r\n");
    let help = text(&match c.cmd(&["CONFIG", "HELP"]) {
        OwnedFrame::Array { data, .. } => data[0].clone(),
        f => panic!("{f:?}"),
    });
    assert!(help.starts_with("CONFIG <subcommand>"));
    c.cmd(&["HELLO", "3"]);
    let ping3 = c.cmd_raw(&["COMMAND", "INFO", "ping"]);
    assert!(ping3.contains("~3\r\n+fast\r\n"), "flags are a set in RESP3: {ping3}");
}

#[test]
fn config_get_set_resetstat() {
    let server = Server::start();
    let mut c = server.connect();
    assert_eq!(
        c.cmd_raw(&["CONFIG", "GET", "maxclients", "proto*"]),
        "*4\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n$18\r\nproto-max-bulk-len\r\n$9\r\n536870912\r\n"
    );
    assert_eq!(c.cmd_raw(&["CONFIG", "GET", "save"]), "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    assert_eq!(c.cmd_raw(&["CONFIG", "GET", "nosuch*"]), "*0\r\n");
    let port = text(&match c.cmd(&["CONFIG", "GET", "port"]) {
        OwnedFrame::Array { data, .. } => data[1].clone(),
        f => panic!("{f:?}"),
    });
    assert_eq!(port, server.client.port().to_string());
    assert_eq!(
        c.cmd_raw(&["CONFIG", "SET", "maxclients", "500", "protected-mode", "no"]),
        "+OK\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["CONFIG", "GET", "maxclients", "protected-mode"]),
        "*4\r\n$10\r\nmaxclients\r\n$3\r\n500\r\n$14\r\nprotected-mode\r\n$2\r\nno\r\n"
    );
    // All or nothing: a bad second pair leaves the first unchanged.
    assert_eq!(
        c.cmd_raw(&["CONFIG", "SET", "maxclients", "600", "protected-mode", "maybe"]),
        "-ERR CONFIG SET failed (possibly related to argument 'protected-mode') - argument must be 'yes' or 'no'\r\n"
    );
    assert!(c.cmd_raw(&["CONFIG", "GET", "maxclients"]).contains("$3\r\n500\r\n"));
    assert_eq!(
        c.cmd_raw(&["CONFIG", "SET", "port", "1"]),
        "-ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["CONFIG", "SET", "nosuch", "1"]),
        "-ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["CONFIG", "SET", "maxclients", "lots"]),
        "-ERR CONFIG SET failed (possibly related to argument 'maxclients') - argument couldn't be parsed into an integer\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["CONFIG", "SET", "maxclients", "1", "maxclients", "2"]),
        "-ERR CONFIG SET failed (possibly related to argument 'maxclients') - duplicate parameter\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["CONFIG", "SET", "maxclients", "1", "port"]),
        "-ERR wrong number of arguments for 'CONFIG|SET' command\r\n"
    );
    assert_eq!(c.cmd_raw(&["CONFIG", "REWRITE"]), "-ERR CONFIG REWRITE is not supported yet\r\n");
    c.cmd(&["PING"]);
    assert_eq!(c.cmd_raw(&["CONFIG", "RESETSTAT"]), "+OK\r\n");
    let stats = text(&c.cmd(&["INFO", "stats"]));
    // RESETSTAT itself is counted once it completes, as in Redis.
    assert_eq!(info_field(&stats, "total_commands_processed").unwrap(), "1");
    assert_eq!(info_field(&stats, "total_error_replies").unwrap(), "0");
    c.cmd(&["HELLO", "3"]);
    assert_eq!(
        c.cmd_raw(&["CONFIG", "GET", "maxclients"]),
        "%1\r\n$10\r\nmaxclients\r\n$3\r\n500\r\n"
    );
}

#[test]
fn maxclients_refuses_the_next_connection() {
    let server = Server::builder().set("server.maxclients", "2").start();
    let mut a = server.connect();
    let mut b = server.connect_admin();
    assert_eq!(a.cmd_raw(&["PING"]), "+PONG\r\n");
    assert_eq!(b.cmd_raw(&["PING"]), "+PONG\r\n");
    let mut c = server.connect();
    assert_eq!(c.read_raw(), b"-ERR max number of clients reached\r\n");
    assert!(c.is_closed());
    // Raising the limit at runtime admits new clients.
    assert_eq!(a.cmd_raw(&["CONFIG", "SET", "maxclients", "3"]), "+OK\r\n");
    let mut d = server.connect();
    assert_eq!(d.cmd_raw(&["PING"]), "+PONG\r\n");
    let stats = text(&a.cmd(&["INFO", "stats"]));
    assert_eq!(info_field(&stats, "rejected_connections").unwrap(), "1");
}

#[test]
fn time_and_quit() {
    let server = Server::start();
    let mut c = server.connect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (secs, micros) = match c.cmd(&["TIME"]) {
        OwnedFrame::Array { data, .. } => (text(&data[0]), text(&data[1])),
        f => panic!("{f:?}"),
    };
    let secs: u64 = secs.parse().unwrap();
    let micros: u64 = micros.parse().unwrap();
    assert!(secs.abs_diff(now) <= 5 && micros < 1_000_000);
    assert_eq!(c.cmd_raw(&["TIME", "x"]), "-ERR wrong number of arguments for 'TIME' command\r\n");
    assert_eq!(c.cmd_raw(&["QUIT"]), "+OK\r\n");
    assert!(c.is_closed());
}

#[test]
fn the_redis_crate_speaks_to_us_in_resp2_and_resp3() {
    let server = Server::start();
    for protocol in ["resp2", "resp3"] {
        let client = redis::Client::open(format!("{}?protocol={protocol}", server.url())).unwrap();
        let mut con = client.get_connection().unwrap();
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
        let echo: Vec<u8> = redis::cmd("ECHO").arg(&b"\x00\xffbin"[..]).query(&mut con).unwrap();
        assert_eq!(echo, b"\x00\xffbin");
        let () = redis::cmd("CLIENT").arg("SETNAME").arg("rs").query(&mut con).unwrap();
        let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
        assert_eq!(name.as_deref(), Some("rs"));
        let cfg: std::collections::HashMap<String, String> =
            redis::cmd("CONFIG").arg("GET").arg("maxclients").query(&mut con).unwrap();
        assert_eq!(cfg["maxclients"], "10000");
        let attrs: std::collections::HashMap<String, redis::Value> =
            redis::cmd("SESSION.ATTRIBUTE").arg("LIST").query(&mut con).unwrap();
        assert_eq!(attrs.len(), 4);
        let err = redis::cmd("FOOBAR").query::<String>(&mut con).unwrap_err();
        assert!(err.to_string().contains("unknown command 'FOOBAR'"), "{err}");
        let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut con).unwrap();
        assert!(info.contains(if protocol == "resp3" { "resp=3" } else { "resp=2" }), "{info}");
    }
}

#[test]
fn redis_cli_ping_and_hello() {
    if !have("redis-cli") {
        eprintln!("skipped: redis-cli is not installed (.ci/run installs redis-tools)");
        return;
    }
    let server = Server::start();
    let port = server.client.port().to_string();
    let out = Command::new("redis-cli").args(["-p", &port, "PING"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PONG\n");
    let out = Command::new("redis-cli").args(["-3", "-p", &port, "HELLO", "3"]).output().unwrap();
    let hello = String::from_utf8_lossy(&out.stdout);
    assert!(hello.contains("proto") && hello.contains("3"), "{hello}");
    assert!(
        hello.lines().any(|l| l.trim_start().starts_with("1#") || l.contains("server")),
        "{hello}"
    );
    let out = Command::new("redis-cli")
        .args(["-p", &port, "SESSION.ATTRIBUTE", "LIST"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "reply_type\njson\ninput_type\njson\nlimit\n100\nobject_id_format\nhex\n"
    );
    let admin = server.admin.port().to_string();
    let out = Command::new("redis-cli").args(["-p", &admin, "PING"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PONG\n");
}

/// `SLOWLOG` and `INFO commandstats` as Redis keeps them: with the threshold at 0 every command
/// is logged, newest first, with its arguments, client address and name; `LEN` and `RESET` work;
/// `slowlog-max-len` bounds the log; the counters count calls and failures and `CONFIG
/// RESETSTAT` clears them.
#[test]
fn slowlog_and_commandstats() {
    let s = Server::start();
    let mut c = s.connect();
    assert_eq!(
        c.cmd_raw(&["CONFIG", "GET", "slowlog-log-slower-than"]),
        "*2\r\n$23\r\nslowlog-log-slower-than\r\n$5\r\n10000\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["CONFIG", "GET", "slowlog-max-len"]),
        "*2\r\n$15\r\nslowlog-max-len\r\n$3\r\n128\r\n"
    );
    assert_eq!(c.cmd_raw(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["SLOWLOG", "RESET"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["CLIENT", "SETNAME", "slowpoke"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ECHO", "hello"]), "$5\r\nhello\r\n");
    let got = c.cmd(&["SLOWLOG", "GET", "1"]);
    let OwnedFrame::Array { data: entries, .. } = &got else { panic!("{got:?}") };
    assert_eq!(entries.len(), 1);
    let OwnedFrame::Array { data: e, .. } = &entries[0] else { panic!("{got:?}") };
    assert_eq!(e.len(), 6);
    let OwnedFrame::Array { data: argv, .. } = &e[3] else { panic!("{got:?}") };
    assert_eq!(argv.iter().map(text).collect::<Vec<_>>(), ["ECHO", "hello"]);
    assert!(text(&e[4]).starts_with("127.0.0.1:"), "{got:?}");
    assert_eq!(text(&e[5]), "slowpoke");
    // RESET, CLIENT SETNAME, ECHO, SLOWLOG GET: four entries.
    assert_eq!(c.cmd_raw(&["SLOWLOG", "LEN"]), ":4\r\n");
    assert_eq!(c.cmd_raw(&["CONFIG", "SET", "slowlog-max-len", "2"]), "+OK\r\n");
    c.cmd_raw(&["PING"]);
    assert_eq!(c.cmd_raw(&["SLOWLOG", "LEN"]), ":2\r\n");
    assert_eq!(c.cmd_raw(&["SLOWLOG", "RESET"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["CONFIG", "SET", "slowlog-log-slower-than", "-1"]), "+OK\r\n");
    c.cmd_raw(&["PING"]);
    // As in Redis, a call is logged after it ran: RESET itself is there; nothing after the
    // threshold went negative is.
    assert_eq!(c.cmd_raw(&["SLOWLOG", "LEN"]), ":1\r\n");
    assert_eq!(
        c.cmd_raw(&["SLOWLOG", "GET", "-2"]),
        "-ERR count should be greater than or equal to -1\r\n"
    );
    assert!(c.cmd_raw(&["SLOWLOG", "NOPE"]).starts_with("-ERR unknown subcommand 'NOPE'"));

    assert_eq!(c.cmd_raw(&["CONFIG", "RESETSTAT"]), "+OK\r\n");
    for _ in 0..3 {
        c.cmd_raw(&["PING"]);
    }
    c.cmd_raw(&["CONFIG", "SET", "maxclients", "0"]);
    let info = text(&c.cmd(&["INFO", "commandstats"]));
    assert!(info.starts_with("# Commandstats\r\n"), "{info}");
    assert!(info.contains("cmdstat_ping:calls=3,"), "{info}");
    assert!(
        info.contains("cmdstat_config|set:calls=1,") && info.contains("failed_calls=1"),
        "{info}"
    );
    let latency = text(&c.cmd(&["INFO", "latencystats"]));
    let line = latency
        .lines()
        .find(|l| l.starts_with("latency_percentiles_usec_ping:"))
        .unwrap_or_else(|| panic!("{latency}"));
    let values: Vec<f64> = line
        .split(':')
        .nth(1)
        .unwrap()
        .split(',')
        .map(|kv| kv.split('=').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(values.len(), 3, "{line}");
    assert!(values[0] <= values[1] && values[1] <= values[2], "{line}");
    // Neither is among the default sections, as in Redis; `all` has both.
    let default = text(&c.cmd(&["INFO"]));
    assert!(!default.contains("# Commandstats") && !default.contains("# Latencystats"));
    let all = text(&c.cmd(&["INFO", "all"]));
    assert!(all.contains("# Commandstats") && all.contains("# Latencystats"));
}
