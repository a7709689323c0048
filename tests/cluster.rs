//! The cluster control plane against a real `kronotop` process: the uninitialised gate (S4), the
//! bootstrap flow of the README, `KR.ADMIN` replies in RESP2 and RESP3, the routing errors of S22,
//! member ids by prefix, persistence across restarts, and registration after a crash.

#![allow(clippy::unwrap_used)]

mod support;

use redis_protocol::resp3::types::OwnedFrame;
use support::{Raw, Server, text};

/// A map key as text: strings as they are, integers (shard ids) in decimal.
fn key(frame: &OwnedFrame) -> String {
    match frame {
        OwnedFrame::Number { data, .. } => data.to_string(),
        other => text(other),
    }
}

/// The pairs of a map reply, RESP3 map or RESP2 flat array, as (key, frame).
fn pairs(frame: OwnedFrame) -> Vec<(String, OwnedFrame)> {
    match frame {
        OwnedFrame::Map { data, .. } => data.into_iter().map(|(k, v)| (key(&k), v)).collect(),
        OwnedFrame::Array { data, .. } => {
            data.chunks(2).map(|p| (key(&p[0]), p[1].clone())).collect()
        }
        other => panic!("not a map: {other:?}"),
    }
}

fn field(frame: &OwnedFrame, key: &str) -> OwnedFrame {
    pairs(frame.clone())
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key} in {frame:?}"))
}

/// The member's id, once it has seen the cluster initialised: a member other than the one that
/// bootstrapped learns of the initialisation a moment after it starts listening.
fn member_id(admin: &mut Raw) -> String {
    let deadline = std::time::Instant::now() + support::PATIENCE;
    loop {
        let reply = admin.cmd(&["KR.ADMIN", "DESCRIBE-MEMBER"]);
        match &reply {
            OwnedFrame::SimpleError { data, .. }
                if data.contains("not been initialized")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => return text(&field(&reply, "member_id")),
        }
    }
}

/// S4: the uninitialised gate.
#[test]
fn s4_uninitialized_cluster_gate() {
    let server = Server::start();
    let mut c = server.connect();
    let mut a = server.connect_admin();
    assert_eq!(c.cmd_raw(&["PING"]), "+PONG\r\n");
    assert_eq!(c.cmd_raw(&["TICK", "FRESH"]), "-ERR cluster has not been initialized yet\r\n");
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN", "DESCRIBE-CLUSTER"]),
        "-ERR cluster has not been initialized yet\r\n"
    );
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN", "DESCRIBE-MEMBER"]),
        "-ERR cluster has not been initialized yet\r\n"
    );
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "INITIALIZE-CLUSTER"]), "+OK\r\n");
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN", "INITIALIZE-CLUSTER"]),
        "-ERR cluster has already been initialized\r\n"
    );
    // KR.ADMIN is an admin-port command.
    assert_eq!(
        c.cmd_raw(&["KR.ADMIN", "DESCRIBE-CLUSTER"]),
        "-ERR command 'KR.ADMIN' is served on the admin port only\r\n"
    );
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "FLY"]), "-ERR unknown subcommand: 'FLY'\r\n");
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN"]),
        "-ERR wrong number of arguments for 'KR.ADMIN' command\r\n"
    );
    // After initialisation the gate opens.
    assert!(c.cmd_raw(&["TICK", "FRESH"]).starts_with(':'));
}

/// The README's bootstrap walk-through, then what it leaves behind, in RESP3 and RESP2.
#[test]
fn bootstrap_flow_routes_every_shard() {
    let server = Server::builder().set("redis.shards", "3").set("bucket.shards", "2").start();
    let mut a = server.connect_admin();
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "INITIALIZE-CLUSTER"]), "+OK\r\n");
    a.cmd(&["HELLO", "3"]);
    let me = a.cmd(&["KR.ADMIN", "DESCRIBE-MEMBER"]);
    let id = text(&field(&me, "member_id"));
    assert_eq!(id.len(), 40);
    assert_eq!(text(&field(&me, "status")), "RUNNING");
    assert_eq!(
        field(&me, "external_port"),
        OwnedFrame::Number { data: i64::from(server.client.port()), attributes: None }
    );
    assert_eq!(
        field(&me, "internal_port"),
        OwnedFrame::Number { data: i64::from(server.admin.port()), attributes: None }
    );
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "ROUTE", "SET", "PRIMARY", "REDIS", "*", &id]), "+OK\r\n");
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "SET-SHARD-STATUS", "REDIS", "*", "READWRITE"]), "+OK\r\n");
    // STASH is an alias of REDIS; a 4-character prefix names the member.
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN", "ROUTE", "SET", "PRIMARY", "STASH", "1", &id[..4]]),
        "+OK\r\n"
    );

    let cluster = a.cmd(&["KR.ADMIN", "DESCRIBE-CLUSTER"]);
    assert_eq!(text(&field(&cluster, "metadata_version")), "1.0.0");
    assert_eq!(text(&field(&cluster, "cluster_name")), "development");
    let redis = pairs(field(&cluster, "redis"));
    // (The test decoder does not keep map order; the wire order is checked on DESCRIBE-SHARD.)
    let mut ids: Vec<&str> = redis.iter().map(|(k, _)| k.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["0", "1", "2"]);
    for (_, shard) in &redis {
        assert_eq!(text(&field(shard, "primary")), id);
        assert_eq!(text(&field(shard, "status")), "READWRITE");
    }
    let bucket = pairs(field(&cluster, "bucket"));
    assert_eq!(bucket.len(), 2);
    for (_, shard) in &bucket {
        assert_eq!(text(&field(shard, "primary")), "");
        assert_eq!(text(&field(shard, "status")), "INOPERABLE");
    }

    let shard = a.cmd_raw(&["KR.ADMIN", "DESCRIBE-SHARD", "REDIS", "2"]);
    assert_eq!(
        shard,
        format!(
            "%5\r\n$7\r\nprimary\r\n$40\r\n{id}\r\n$8\r\nstandbys\r\n*0\r\n$12\r\nsync_standby\r\n$0\r\n\r\n\
             $6\r\nstatus\r\n$9\r\nREADWRITE\r\n\
             $14\r\nlinked_volumes\r\n*1\r\n$13\r\nredis-shard-2\r\n"
        )
    );
    // The same reply as a flat array in RESP2.
    let mut a2 = server.connect_admin();
    let shard2 = a2.cmd_raw(&["KR.ADMIN", "DESCRIBE-SHARD", "bucket", "1"]);
    assert_eq!(
        shard2,
        "*10\r\n$7\r\nprimary\r\n$0\r\n\r\n$8\r\nstandbys\r\n*0\r\n$12\r\nsync_standby\r\n$0\r\n\r\n\
         $6\r\nstatus\r\n$10\r\nINOPERABLE\r\n\
         $14\r\nlinked_volumes\r\n*1\r\n$14\r\nbucket-shard-1\r\n"
    );
    let members = pairs(a.cmd(&["KR.ADMIN", "LIST-MEMBERS"]));
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].0, id);
    assert_eq!(text(&field(&members[0].1, "status")), "RUNNING");
    let found = a.cmd(&["KR.ADMIN", "FIND-MEMBER", &id[..4]]);
    assert_eq!(text(&field(&found, "external_host")), "127.0.0.1");
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "LIST-SILENT-MEMBERS"]), "*0\r\n");
}

/// S22: routing errors, plus the member and shard argument errors.
#[test]
fn s22_kr_admin_routing_errors() {
    let server = Server::start();
    let mut a = server.connect_admin();
    a.cmd(&["KR.ADMIN", "INITIALIZE-CLUSTER"]);
    let id = member_id(&mut a);
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["ROUTE", "SET", "STANDBY", "BUCKET", "0", &id],
            "ERR no primary member assigned yet".into(),
        ),
        (
            vec!["ROUTE", "UNSET", "PRIMARY", "BUCKET", "0", &id],
            "ERR UNSET PRIMARY is not supported".into(),
        ),
        (
            vec![
                "ROUTE",
                "SET",
                "PRIMARY",
                "BUCKET",
                "0",
                "0123456789abcdef0123456789abcdef01234567",
            ],
            "ERR member not found".into(),
        ),
        (vec!["SET-SHARD-STATUS", "BUCKET", "999999", "READONLY"], "ERR invalid shard id".into()),
        (
            vec!["SET-SHARD-STATUS", "BUCKET", "0", "DISABLED"],
            "ERR Invalid shard status DISABLED".into(),
        ),
        (vec!["DESCRIBE-SHARD", "FOOBAR", "0"], "ERR invalid shard kind".into()),
        (
            vec!["SET-MEMBER-STATUS", &id, "some-status"],
            "ERR Invalid member status some-status".into(),
        ),
        (vec!["REMOVE-MEMBER", &id], "ERR Member in RUNNING status cannot be removed".into()),
        (vec!["DROP-CLUSTER", "wrong-name"], "ERR cluster name does not match".into()),
        (
            vec!["DROP-CLUSTER", "development", "6f1c5d0e-1f7a-4d2b-9a56-3f0b2c7e9d41"],
            "ERR no pending drop-cluster token for this cluster".into(),
        ),
        (
            vec!["ROUTE", "MOVE", "PRIMARY", "BUCKET", "0", &id],
            "ERR Invalid operation kind: MOVE".into(),
        ),
        (
            vec!["ROUTE", "SET", "LEADER", "BUCKET", "0", &id],
            "ERR Invalid route kind: LEADER".into(),
        ),
        (vec!["FIND-MEMBER", "zz"], "ERR Invalid memberId: zz".into()),
        (vec!["FIND-MEMBER", "ffff"], "ERR no member found with prefix: ffff".into()),
        (
            vec!["FIND-MEMBER", "0123456789abcdef0123456789abcdef01234567"],
            "ERR Member: 0123456789abcdef0123456789abcdef01234567 not registered".into(),
        ),
        (vec!["FIND-MEMBER"], "ERR member id is required".into()),
        (vec!["DESCRIBE-MEMBER", "x"], "ERR invalid number of parameters".into()),
        (vec!["DESCRIBE-SHARD", "BUCKET", "7"], "ERR invalid shard id".into()),
        (vec!["DESCRIBE-SHARD", "BUCKET", "-1"], "ERR invalid shard id".into()),
        (vec!["SET-SHARD-STATUS", "BUCKET", "0"], "ERR invalid number of parameters".into()),
        (vec!["DROP-CLUSTER"], "ERR cluster name is required".into()),
    ];
    for (args, want) in cases {
        let full: Vec<&str> = std::iter::once("KR.ADMIN").chain(args.iter().copied()).collect();
        assert_eq!(a.cmd_raw(&full), format!("-{want}\r\n"), "KR.ADMIN {}", args.join(" "));
    }
    // Standby rules once a primary exists.
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "ROUTE", "SET", "PRIMARY", "BUCKET", "0", &id]), "+OK\r\n");
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN", "ROUTE", "SET", "STANDBY", "BUCKET", "0", &id]),
        "-ERR primary cannot be assigned as a standby\r\n"
    );
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN", "ROUTE", "UNSET", "STANDBY", "BUCKET", "0", &id]),
        "-ERR member is not a standby\r\n"
    );
    // `*` is all or nothing: shard 0 has a primary already, the others do not, and a standby
    // request for every shard fails as a whole.
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN", "ROUTE", "SET", "STANDBY", "BUCKET", "*", &id]),
        "-ERR primary cannot be assigned as a standby\r\n"
    );
}

#[test]
fn member_status_and_drop_cluster() {
    let server = Server::start();
    let mut a = server.connect_admin();
    a.cmd(&["KR.ADMIN", "INITIALIZE-CLUSTER"]);
    let id = member_id(&mut a);
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "SET-MEMBER-STATUS", &id[..4], "unavailable"]), "+OK\r\n");
    let found = a.cmd(&["KR.ADMIN", "FIND-MEMBER", &id]);
    assert_eq!(text(&field(&found, "status")), "UNAVAILABLE");
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "SET-MEMBER-STATUS", &id, "RUNNING"]), "+OK\r\n");

    let token = text(&a.cmd(&["KR.ADMIN", "DROP-CLUSTER", "development"]));
    assert_eq!(token.len(), 36, "a UUID: {token}");
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN", "DROP-CLUSTER", "development", "not-the-token"]),
        "-ERR invalid drop-cluster token\r\n"
    );
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN", "DROP-CLUSTER", "development", &token]),
        "-ERR no pending drop-cluster token for this cluster\r\n",
        "any attempt consumes the token"
    );
    let token = text(&a.cmd(&["KR.ADMIN", "DROP-CLUSTER", "development"]));
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "DROP-CLUSTER", "development", &token]), "+OK\r\n");
    // The cluster is gone; this member registered itself again and can initialise anew.
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN", "DESCRIBE-CLUSTER"]),
        "-ERR cluster has not been initialized yet\r\n"
    );
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "INITIALIZE-CLUSTER"]), "+OK\r\n");
    assert_eq!(member_id(&mut a), id);
}

#[test]
fn initialization_and_routes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Server::builder().data_dir(dir.path()).start();
    let mut a = first.connect_admin();
    a.cmd(&["KR.ADMIN", "INITIALIZE-CLUSTER"]);
    let id = member_id(&mut a);
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "ROUTE", "SET", "PRIMARY", "BUCKET", "3", &id]), "+OK\r\n");
    drop(a);
    assert!(first.signal_and_wait("TERM").success());

    let second = Server::builder().data_dir(dir.path()).start();
    let mut a = second.connect_admin();
    assert_eq!(member_id(&mut a), id);
    let shard = a.cmd(&["KR.ADMIN", "DESCRIBE-SHARD", "BUCKET", "3"]);
    assert_eq!(text(&field(&shard, "primary")), id);
    let me = a.cmd(&["KR.ADMIN", "DESCRIBE-MEMBER"]);
    assert_eq!(text(&field(&me, "status")), "RUNNING");
}

#[test]
fn a_crashed_member_restarts_once_its_silence_shows() {
    let dir = tempfile::tempdir().unwrap();
    let fast = |b: support::Builder| {
        b.data_dir(dir.path())
            .set("cluster.heartbeat_interval_ms", "100")
            // Long enough that the immediate restart below surely finds it fresh, even on a busy
            // machine.
            .set("cluster.max_silent_period_ms", "2000")
    };
    let mut first = fast(Server::builder()).start();
    let pid = first.pid();
    assert!(!first.signal_and_wait("KILL").success(), "SIGKILL of {pid}");
    // Right away the registry still shows a live member with this id.
    let (status, logs) = Server::builder().data_dir(dir.path()).spawn().wait_exit();
    assert_eq!(status.code(), Some(1));
    assert!(logs.contains("A member is already running with this id"), "{logs}");
    // Once silent longer than the maximum silent period, it takes over.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let second = fast(Server::builder()).start();
    assert!(second.logs().contains("taking over"), "{}", second.logs());
    drop(second);
    // force_initialization skips the check.
    let third =
        Server::builder().data_dir(dir.path()).set("cluster.force_initialization", "true").start();
    let mut a = third.connect_admin();
    assert_eq!(a.cmd_raw(&["PING"]), "+PONG\r\n");
}

fn info_cluster(addr: std::net::SocketAddr, field_name: &str) -> String {
    let mut c = Raw::connect(addr);
    support::info_field(&text(&c.cmd(&["INFO", "cluster"])), field_name).unwrap()
}

/// `kronotop --members 3 --bootstrap`: three members in one process sharing one metadata store.
#[test]
fn three_members_see_each_other_and_every_route_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::builder()
        .data_dir(dir.path())
        .members(3)
        .arg("--bootstrap")
        .set("redis.shards", "4")
        .set("bucket.shards", "3")
        .set("cluster.heartbeat_interval_ms", "100")
        .set("cluster.max_silent_period_ms", "1000")
        .start();
    assert_eq!(server.admins.len(), 3);
    let ids: Vec<String> = server.admins.iter().map(|a| member_id(&mut Raw::connect(*a))).collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "three members: {ids:?}");
    let mut describe = Vec::new();
    for admin in &server.admins {
        let mut a = Raw::connect(*admin);
        let members = pairs(a.cmd(&["KR.ADMIN", "LIST-MEMBERS"]));
        assert_eq!(members.len(), 3);
        assert!(members.iter().all(|(_, m)| text(&field(m, "status")) == "RUNNING"));
        describe.push(a.cmd_raw(&["KR.ADMIN", "DESCRIBE-CLUSTER"]));
    }
    assert!(describe.windows(2).all(|w| w[0] == w[1]), "DESCRIBE-CLUSTER agrees on every member");
    // --bootstrap spread the primaries round-robin and opened every shard.
    let mut a0 = Raw::connect(server.admins[0]);
    for (shard, owner) in [(0, 0), (1, 1), (2, 2), (3, 0)] {
        let s = a0.cmd(&["KR.ADMIN", "DESCRIBE-SHARD", "REDIS", &shard.to_string()]);
        assert_eq!(text(&field(&s, "primary")), ids[owner], "redis shard {shard}");
        assert_eq!(text(&field(&s, "status")), "READWRITE");
    }
    // A change made on member 0 reaches the routing tables of the others within a second.
    let before = info_cluster(server.clients[1], "cluster_topology_version");
    assert_eq!(a0.cmd_raw(&["KR.ADMIN", "SET-SHARD-STATUS", "BUCKET", "1", "READONLY"]), "+OK\r\n");
    let want = info_cluster(server.clients[0], "cluster_topology_version");
    assert_ne!(before, want);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    for client in &server.clients[1..] {
        while info_cluster(*client, "cluster_topology_version") != want {
            assert!(
                std::time::Instant::now() < deadline,
                "member at {client} did not reload in time"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    assert_eq!(info_cluster(server.clients[2], "cluster_silent_members"), "0");

    // Restarting with --bootstrap changes nothing on an initialised cluster: the same members
    // come back, and the status set by hand is kept.
    assert!(server.signal_and_wait("TERM").success());
    let again = Server::builder().data_dir(dir.path()).members(3).arg("--bootstrap").start();
    let ids_again: Vec<String> =
        again.admins.iter().map(|a| member_id(&mut Raw::connect(*a))).collect();
    assert_eq!(ids_again, ids);
    let s = Raw::connect(again.admins[1]).cmd(&["KR.ADMIN", "DESCRIBE-SHARD", "BUCKET", "1"]);
    assert_eq!(text(&field(&s, "status")), "READONLY");
}

/// S13: namespaces, plus LIST, MOVE, PURGE and their errors.
#[test]
fn s13_namespaces() {
    let server = Server::start();
    let mut a = server.connect_admin();
    let mut c = server.connect();
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "CURRENT"]),
        "-ERR cluster has not been initialized yet\r\n"
    );
    a.cmd(&["KR.ADMIN", "INITIALIZE-CLUSTER"]);
    assert_eq!(c.cmd_raw(&["NAMESPACE", "CURRENT"]), "$6\r\nglobal\r\n");
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "CREATE", "name.__internal__"]),
        "-ERR Namespace 'name.__internal__' is reserved for internal use\r\n"
    );
    assert_eq!(c.cmd_raw(&["NAMESPACE", "CREATE", "production.users"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "CREATE", "production.users"]),
        "-NAMESPACEALREADYEXISTS Namespace already exists: production.users\r\n"
    );
    assert_eq!(c.cmd_raw(&["NAMESPACE", "EXISTS", "production.users"]), ":1\r\n");
    assert_eq!(c.cmd_raw(&["NAMESPACE", "EXISTS", "production.none"]), ":0\r\n");
    assert_eq!(c.cmd_raw(&["NAMESPACE", "LIST", "production"]), "*1\r\n$5\r\nusers\r\n");
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "USE", "non.existing.namespace"]),
        "-NOSUCHNAMESPACE No such namespace: 'non.existing.namespace'\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "REMOVE", "global"]),
        "-ERR Cannot remove the default namespace: 'global'\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "PURGE", "production.users"]),
        "-ERR Namespace 'production.users' must be logically removed before purge\r\n"
    );
    assert_eq!(c.cmd_raw(&["NAMESPACE", "USE", "production.users"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["NAMESPACE", "CURRENT"]), "$16\r\nproduction.users\r\n");
    assert_eq!(c.cmd_raw(&["NAMESPACE", "REMOVE", "production.users"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "USE", "production.users"]),
        "-NAMESPACEBEINGREMOVED Namespace 'production.users' is being removed\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "EXISTS", "production.users"]),
        "-NAMESPACEBEINGREMOVED Namespace 'production.users' is being removed\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "CREATE", "production.users"]),
        "-NAMESPACEBEINGREMOVED Namespace 'production.users' is being removed\r\n"
    );
    // Every live member (here, the only one) has seen the removal, so PURGE goes through, and the
    // name can be used again.
    assert_eq!(c.cmd_raw(&["NAMESPACE", "PURGE", "production.users"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["NAMESPACE", "EXISTS", "production.users"]), ":0\r\n");
    assert_eq!(c.cmd_raw(&["NAMESPACE", "CREATE", "production.users"]), "+OK\r\n");
    // Top-level listing hides the internal leaves.
    assert_eq!(c.cmd_raw(&["NAMESPACE", "LIST"]), "*2\r\n$6\r\nglobal\r\n$10\r\nproduction\r\n");
    assert_eq!(c.cmd_raw(&["NAMESPACE", "LIST", "global"]), "*0\r\n");
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "LIST", "nope"]),
        "-NOSUCHNAMESPACE No such namespace: 'nope'\r\n"
    );
    // MOVE keeps the subtree under the new name.
    assert_eq!(c.cmd_raw(&["NAMESPACE", "MOVE", "production", "prod"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["NAMESPACE", "EXISTS", "prod.users"]), ":1\r\n");
    assert_eq!(c.cmd_raw(&["NAMESPACE", "EXISTS", "production.users"]), ":0\r\n");
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "MOVE", "nope", "x"]),
        "-NOSUCHNAMESPACE No such namespace: 'nope'\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "MOVE", "prod", "global"]),
        "-NAMESPACEALREADYEXISTS Namespace already exists: global\r\n"
    );
    // Limits and arity.
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "CREATE", "a.b.c.d.e.f.g.h.i.j.k"]),
        "-ERR Namespace depth exceeds maximum allowed depth of 10\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "CREATE"]),
        "-ERR wrong number of arguments for 'NAMESPACE CREATE' command\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["NAMESPACE", "CREATE", "a..b"]),
        "-ERR Invalid namespace name: 'a..b'\r\n"
    );
    // SESSION.CLOSE takes the session back to the default namespace.
    assert_eq!(c.cmd_raw(&["NAMESPACE", "USE", "prod.users"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["SESSION.CLOSE"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["NAMESPACE", "CURRENT"]), "$6\r\nglobal\r\n");
}

/// `kronotop bootstrap` over the admin ports of two running members, as the Docker demo uses it.
#[test]
fn the_bootstrap_command_routes_primaries_and_standbys() {
    let server =
        Server::builder().members(2).set("bucket.shards", "2").set("redis.shards", "1").start();
    let (a0, a1) = (server.admins[0].to_string(), server.admins[1].to_string());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kronotop"))
        .args(["bootstrap", "--primary", "BUCKET", &format!("{a0}=0"), "--primary", "BUCKET"])
        .arg(format!("{a1}=1"))
        .args(["--standby", "BUCKET", &format!("{a1}=0"), "--primary", "REDIS", &format!("{a0}=0")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("initialised the cluster"), "{stdout}");
    let ids: Vec<String> = server.admins.iter().map(|a| member_id(&mut Raw::connect(*a))).collect();
    let mut a = Raw::connect(server.admins[1]);
    let s0 = a.cmd(&["KR.ADMIN", "DESCRIBE-SHARD", "BUCKET", "0"]);
    assert_eq!(text(&field(&s0, "primary")), ids[0]);
    assert_eq!(
        field(&s0, "standbys"),
        OwnedFrame::Array {
            data: vec![OwnedFrame::BlobString {
                data: ids[1].clone().into_bytes(),
                attributes: None
            }],
            attributes: None
        }
    );
    assert_eq!(text(&field(&s0, "status")), "READWRITE");
    let s1 = a.cmd(&["KR.ADMIN", "DESCRIBE-SHARD", "BUCKET", "1"]);
    assert_eq!(text(&field(&s1, "primary")), ids[1]);
    // Running it again changes nothing and succeeds.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_kronotop"))
        .args(["bootstrap", "--primary", "BUCKET", &format!("{a1}=0")])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already initialised"));
    let s0 = a.cmd(&["KR.ADMIN", "DESCRIBE-SHARD", "BUCKET", "0"]);
    assert_eq!(text(&field(&s0, "primary")), ids[0]);
    // Unknown shard ids are refused.
    let fresh = Server::builder().set("bucket.shards", "1").start();
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_kronotop"))
        .args(["bootstrap", "--primary", "BUCKET", &format!("{}=5", fresh.admin)])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Invalid shard ids"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// `REMOVE-MEMBER` forgets a member only when it is not RUNNING and no route names it: a route
/// naming a forgotten member would send clients and standbys to nobody.
#[test]
fn a_member_is_removed_only_once_no_route_names_it() {
    let server =
        Server::builder().members(2).set("bucket.shards", "2").set("redis.shards", "1").start();
    let mut a = Raw::connect(server.admins[0]);
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "INITIALIZE-CLUSTER"]), "+OK\r\n");
    let ids: Vec<String> = server.admins.iter().map(|a| member_id(&mut Raw::connect(*a))).collect();
    let route = |a: &mut Raw, args: &[&str]| {
        let mut full = vec!["KR.ADMIN", "ROUTE"];
        full.extend_from_slice(args);
        assert_eq!(a.cmd_raw(&full), "+OK\r\n", "{args:?}");
    };
    route(&mut a, &["SET", "PRIMARY", "BUCKET", "*", &ids[0]]);
    route(&mut a, &["SET", "STANDBY", "BUCKET", "0", &ids[1]]);
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "SET-MEMBER-STATUS", &ids[1], "STOPPED"]), "+OK\r\n");
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN", "REMOVE-MEMBER", &ids[1]]),
        "-ERR Member is still routed: standby of BUCKET 0; move its shards or unset its standby \
         routes first\r\n"
    );
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "SET-MEMBER-STATUS", &ids[0], "STOPPED"]), "+OK\r\n");
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN", "REMOVE-MEMBER", &ids[0]]),
        "-ERR Member is still routed: primary of BUCKET 0, primary of BUCKET 1; move its shards \
         or unset its standby routes first\r\n"
    );
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "SET-MEMBER-STATUS", &ids[0], "RUNNING"]), "+OK\r\n");
    route(&mut a, &["UNSET", "STANDBY", "BUCKET", "0", &ids[1]]);
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "REMOVE-MEMBER", &ids[1]]), "+OK\r\n");
    assert_eq!(
        a.cmd_raw(&["KR.ADMIN", "FIND-MEMBER", &ids[1]]),
        format!("-ERR Member: {} not registered\r\n", ids[1])
    );
    // The remaining member still serves its shards.
    let s0 = a.cmd(&["KR.ADMIN", "DESCRIBE-SHARD", "BUCKET", "0"]);
    assert_eq!(text(&field(&s0, "primary")), ids[0]);
}

/// `CLUSTER …` in Redis Cluster's formats, over three members whose REDIS shards are spread.
#[test]
fn cluster_commands_describe_the_redis_slots() {
    let fresh = Server::start();
    let mut f = fresh.connect();
    assert_eq!(f.cmd_raw(&["CLUSTER", "KEYSLOT", "foo"]), ":12182\r\n");
    assert_eq!(
        f.cmd_raw(&["CLUSTER", "KEYSLOT", "{user1000}.following"]),
        f.cmd_raw(&["CLUSTER", "KEYSLOT", "{user1000}.followers"])
    );
    assert_eq!(f.cmd_raw(&["CLUSTER", "SLOTS"]), "-ERR cluster has not been initialized yet\r\n");
    assert_eq!(
        f.cmd_raw(&["CLUSTER", "COUNTKEYSINSLOT", "1"]),
        "-ERR cluster has not been initialized yet\r\n"
    );

    let server = Server::builder()
        .members(3)
        .arg("--bootstrap")
        .set("redis.shards", "3")
        .set("bucket.shards", "1")
        .start();
    let ids: Vec<String> = server.admins.iter().map(|a| member_id(&mut Raw::connect(*a))).collect();
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["CLUSTER", "MYID"]), format!("$40\r\n{}\r\n", ids[0]));
    // Shard s is member s's (round-robin), and slots 16380-16383 wrap back to shard 0.
    let want = [(0, 5459, 0), (5460, 10919, 1), (10920, 16379, 2), (16380, 16383, 0)];
    let mut expected = format!("*{}\r\n", want.len());
    for (a, b, m) in want {
        let port = server.clients[m].port();
        expected.push_str(&format!(
            "*3\r\n:{a}\r\n:{b}\r\n*4\r\n$9\r\n127.0.0.1\r\n:{port}\r\n$40\r\n{}\r\n*0\r\n",
            ids[m]
        ));
    }
    assert_eq!(c.cmd_raw(&["CLUSTER", "SLOTS"]), expected);
    let nodes = text(&c.cmd(&["CLUSTER", "NODES"]));
    assert_eq!(nodes.lines().count(), 3, "{nodes}");
    for (i, id) in ids.iter().enumerate() {
        let line = nodes.lines().find(|l| l.starts_with(id.as_str())).unwrap();
        assert!(
            line.contains(&format!(
                "127.0.0.1:{}@{}",
                server.clients[i].port(),
                server.admins[i].port()
            )),
            "{line}"
        );
        assert!(line.contains("master") && line.contains(" connected "), "{line}");
        assert_eq!(line.contains("myself"), i == 0, "{line}");
    }
    assert!(
        nodes.lines().any(|l| l.starts_with(ids[0].as_str()) && l.ends_with(" 0-5459 16380-16383")),
        "{nodes}"
    );
    let info = text(&c.cmd(&["CLUSTER", "INFO"]));
    assert!(
        info.contains("cluster_state:ok\r\n") && info.contains("cluster_slots_assigned:16384\r\n"),
        "{info}"
    );
    assert!(
        info.contains("cluster_known_nodes:3\r\n") && info.contains("cluster_size:3\r\n"),
        "{info}"
    );
    // An inoperable shard makes the cluster state fail.
    let mut a = Raw::connect(server.admins[0]);
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "SET-SHARD-STATUS", "REDIS", "1", "INOPERABLE"]), "+OK\r\n");
    let info = text(&c.cmd(&["CLUSTER", "INFO"]));
    assert!(
        info.contains("cluster_state:fail\r\n") && info.contains("cluster_slots_ok:10924\r\n"),
        "{info}"
    );
    c.cmd(&["HELLO", "3"]);
    let shards = c.cmd_raw(&["CLUSTER", "SHARDS"]);
    assert!(
        shards.starts_with("*3\r\n%2\r\n$5\r\nslots\r\n*4\r\n:0\r\n:5459\r\n:16380\r\n:16383\r\n"),
        "{shards}"
    );
}
