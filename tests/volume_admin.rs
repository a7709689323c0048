//! `VOLUME.*` on the admin port of bootstrapped members: volumes open where shards are routed,
//! follow route changes, and answer the reference's replies and errors.

#![allow(clippy::unwrap_used)]

mod support;

use redis_protocol::resp3::types::OwnedFrame;
use support::{Raw, Server, text};

fn names(frame: OwnedFrame) -> Vec<String> {
    match frame {
        OwnedFrame::Array { data, .. } => data.iter().map(text).collect(),
        other => panic!("not an array: {other:?}"),
    }
}

fn member_id(admin: &mut Raw) -> String {
    let raw = admin.cmd_raw(&["KR.ADMIN", "DESCRIBE-MEMBER"]);
    raw.split("\r\n").nth(4).unwrap().to_owned()
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn volumes_follow_routes_and_answer_admin_commands() {
    let server = Server::builder()
        .members(2)
        .arg("--bootstrap")
        .set("redis.shards", "1")
        .set("bucket.shards", "2")
        .set("volume.segment_size", "1048576")
        .start();
    let mut a0 = Raw::connect(server.admins[0]);
    let mut a1 = Raw::connect(server.admins[1]);
    // --bootstrap routes the shards right after the members start; volumes open as routes arrive.
    eventually("member 0 opens its volumes", || {
        a0.cmd_raw(&["VOLUME.ADMIN", "LIST"])
            == "*2\r\n$14\r\nbucket-shard-0\r\n$13\r\nredis-shard-0\r\n"
    });
    eventually("member 1 opens its volume", || {
        names(a1.cmd(&["VOLUME.ADMIN", "LIST"])) == ["bucket-shard-1"]
    });

    a0.cmd(&["HELLO", "3"]);
    let described = a0.cmd_raw(&["VOLUME.ADMIN", "DESCRIBE", "bucket-shard-0"]);
    assert!(
        described.starts_with(
            "%5\r\n$4\r\nname\r\n$14\r\nbucket-shard-0\r\n$6\r\nstatus\r\n$9\r\nREADWRITE\r\n"
        ),
        "{described}"
    );
    assert!(described.contains("$12\r\nsegment_size\r\n:1048576\r\n"), "{described}");
    assert!(described.contains("$18\r\ngarbage_percentage\r\n,0\r\n"), "{described}");
    assert_eq!(a0.cmd_raw(&["VOLUME.ADMIN", "LIST-SEGMENTS", "bucket-shard-0"]), "*1\r\n:1\r\n");
    assert_eq!(
        a0.cmd_raw(&["VOLUME.ADMIN", "SET-STATUS", "bucket-shard-0", "readonly"]),
        "+OK\r\n"
    );
    let stats = a0.cmd_raw(&["VOLUME.STATS", "bucket-shard-0"]);
    assert!(
        stats.contains("$6\r\nstatus\r\n$8\r\nREADONLY\r\n")
            && stats.contains("$13\r\nsegment_count\r\n:1\r\n"),
        "{stats}"
    );
    let ops = a0.cmd_raw(&["VOLUME.STATS", "bucket-shard-0", "OPCOUNTERS"]);
    assert!(ops.contains("$16\r\nsegments_created\r\n:1\r\n"), "{ops}");
    assert_eq!(a0.cmd_raw(&["VOLUME.STATS", "bucket-shard-0", "RESET"]), "+OK\r\n");
    let cursor = a0.cmd_raw(&["VOLUME.INSPECT", "CURSOR", "bucket-shard-0"]);
    assert_eq!(
        cursor,
        "%4\r\n$17\r\nactive_segment_id\r\n:1\r\n$12\r\nversionstamp\r\n$0\r\n\r\n$13\r\nnext_position\r\n:64\r\n\
         $15\r\nsequence_number\r\n:-1\r\n"
    );
    assert_eq!(a0.cmd_raw(&["VOLUME.ADMIN", "CLEANUP-ORPHAN-FILES", "bucket-shard-0"]), "*0\r\n");
    assert_eq!(a0.cmd_raw(&["VOLUME.ADMIN", "PRUNE-CHANGELOG", "bucket-shard-0", "24"]), "+OK\r\n");

    let errors: &[(&[&str], &str)] = &[
        (
            &["VOLUME.ADMIN", "DESCRIBE", "bucket-shard-1"],
            "-ERR Volume: 'bucket-shard-1' is not open\r\n",
        ),
        (&["VOLUME.ADMIN", "DESCRIBE", "shard-1"], "-ERR invalid volume name: shard-1\r\n"),
        (&["VOLUME.ADMIN", "DESCRIBE"], "-ERR invalid number of parameters\r\n"),
        (
            &["VOLUME.ADMIN", "SET-STATUS", "bucket-shard-0", "SLEEPY"],
            "-ERR Invalid volume status: SLEEPY\r\n",
        ),
        (
            &["VOLUME.ADMIN", "PRUNE-CHANGELOG", "bucket-shard-0", "0"],
            "-ERR retention period must be greater than zero\r\n",
        ),
        (&["VOLUME.ADMIN", "FLY"], "-ERR unknown subcommand: 'FLY'\r\n"),
        (&["VOLUME.STATS"], "-ERR wrong number of arguments for 'VOLUME.STATS' command\r\n"),
        (&["VOLUME.STATS", "bucket-shard-0", "NOPE"], "-ERR unknown subcommand 'NOPE'\r\n"),
        (
            &["VOLUME.ADMIN", "VACUUM", "START", "bucket-shard-0", "lots"],
            "-ERR garbage-threshold must be a number\r\n",
        ),
        (
            &["VOLUME.ADMIN", "VACUUM", "START", "bucket-shard-0", "100"],
            "-ERR garbage-threshold must be between 0 and 100 (exclusive)\r\n",
        ),
        (
            &["VOLUME.ADMIN", "VACUUM", "STOP", "bucket-shard-0"],
            "-ERR No active vacuum on volume bucket-shard-0\r\n",
        ),
        (
            &["VOLUME.ADMIN", "VACUUM", "SPIN", "bucket-shard-0"],
            "-ERR unknown subcommand: 'SPIN'\r\n",
        ),
    ];
    for (args, want) in errors {
        assert_eq!(a0.cmd_raw(args), *want, "{}", args.join(" "));
    }
    // A vacuum run on an empty volume has nothing to do; its result stays until DROP.
    assert_eq!(a0.cmd_raw(&["VOLUME.ADMIN", "VACUUM", "START", "redis-shard-0", "50"]), "+OK\r\n");
    eventually("the vacuum run ends", || {
        a0.cmd_raw(&["VOLUME.ADMIN", "VACUUM", "STATUS", "redis-shard-0"])
            .starts_with("%3\r\n$6\r\nactive\r\n#f\r\n")
    });
    let status = a0.cmd_raw(&["VOLUME.ADMIN", "VACUUM", "STATUS", "redis-shard-0"]);
    assert!(status.contains("$6\r\nresult\r\n$7\r\nNO_WORK\r\n"), "{status}");
    assert!(status.contains("$5\r\nerror\r\n_\r\n"), "no error: {status}");
    assert_eq!(
        a0.cmd_raw(&["VOLUME.ADMIN", "VACUUM", "START", "redis-shard-0", "50"]),
        "-ERR Stale vacuum metadata exists on volume redis-shard-0, run DROP first\r\n"
    );
    assert_eq!(a0.cmd_raw(&["VOLUME.ADMIN", "VACUUM", "DROP", "redis-shard-0"]), "+OK\r\n");
    assert_eq!(
        a0.cmd_raw(&["VOLUME.ADMIN", "VACUUM", "STATUS", "redis-shard-0"]),
        "%2\r\n$6\r\nactive\r\n#f\r\n$8\r\nsegments\r\n*0\r\n"
    );
    let mut client = server.connect();
    assert_eq!(
        client.cmd_raw(&["VOLUME.ADMIN", "LIST"]),
        "-ERR command 'VOLUME.ADMIN' is served on the admin port only\r\n"
    );

    // Member 1 becomes standby of bucket shard 0: it replicates the volume without opening it
    // (opening registers a segment, which only a primary may do). Then the primary moves to it:
    // member 1 opens its copy and member 0 closes its volume.
    let m1 = member_id(&mut a1);
    assert_eq!(a1.cmd_raw(&["KR.ADMIN", "ROUTE", "SET", "STANDBY", "BUCKET", "0", &m1]), "+OK\r\n");
    eventually("member 1 replicates bucket-shard-0", || {
        let r = a1.cmd_raw(&["VOLUME.STATS", "bucket-shard-0", "REPLICATION"]);
        r.contains("$7\r\nstandby\r\n") && r.contains("$9\r\ncaught_up\r\n:1\r\n")
    });
    assert!(!names(a1.cmd(&["VOLUME.ADMIN", "LIST"])).contains(&"bucket-shard-0".to_owned()));
    assert_eq!(a1.cmd_raw(&["KR.ADMIN", "SET-SHARD-STATUS", "BUCKET", "0", "READONLY"]), "+OK\r\n");
    assert_eq!(a1.cmd_raw(&["KR.ADMIN", "ROUTE", "SET", "PRIMARY", "BUCKET", "0", &m1]), "+OK\r\n");
    let mut a0 = Raw::connect(server.admins[0]);
    eventually("member 0 closes bucket-shard-0", || {
        names(a0.cmd(&["VOLUME.ADMIN", "LIST"])) == ["redis-shard-0"]
    });
    eventually("member 1 opens bucket-shard-0", || {
        names(a1.cmd(&["VOLUME.ADMIN", "LIST"])).contains(&"bucket-shard-0".to_owned())
    });
}
