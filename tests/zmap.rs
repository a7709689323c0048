//! Transactions and ZMap against a real `kronotop` process: scenarios S6 to S12 and S14 of the
//! reference (section 8.3), conflicts between clients, a compare-and-set register under
//! contention, and ZWATCH.

#![allow(clippy::unwrap_used)]

mod support;

use support::{Raw, Server};

fn ready() -> Server {
    Server::builder().arg("--bootstrap").set("redis.shards", "1").set("bucket.shards", "1").start()
}

/// S6: transaction control errors.
#[test]
fn s6_transaction_control() {
    let server = ready();
    let mut c = server.connect();
    let tick = c.cmd_raw(&["TICK", "FRESH"]);
    let v: i64 = tick.trim_start_matches(':').trim().parse().unwrap();
    assert!(v > 0, "{tick}");
    assert_eq!(c.cmd_raw(&["TICK", "FOO"]), "-ERR illegal argument for TICK: 'FOO'\r\n");
    assert_eq!(
        c.cmd_raw(&["SNAPSHOTREAD", "MAYBE"]),
        "-ERR illegal argument for SNAPSHOTREAD: 'MAYBE'\r\n"
    );
    assert_eq!(c.cmd_raw(&["COMMIT"]), "-TRANSACTION there is no transaction in progress.\r\n");
    assert_eq!(c.cmd_raw(&["ROLLBACK"]), "-TRANSACTION there is no transaction in progress.\r\n");
    assert_eq!(c.cmd_raw(&["BEGIN"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["BEGIN"]),
        "-TRANSACTION there is already a transaction in progress.\r\n"
    );
    assert_eq!(c.cmd_raw(&["COMMIT", "RETURNING", "committed-version"]), ":-1\r\n");
    assert_eq!(
        c.cmd_raw(&["GETREADVERSION"]),
        "-TRANSACTION there is no transaction in progress.\r\n"
    );
    assert_eq!(c.cmd_raw(&["COMMIT", "FOO"]), "-ERR unknown subcommand: 'FOO'\r\n");
    assert_eq!(c.cmd_raw(&["COMMIT", "RETURNING"]), "-ERR No arguments given for RETURNING\r\n");
    assert_eq!(c.cmd_raw(&["COMMIT", "RETURNING", "x"]), "-ERR Illegal argument: x\r\n");
    assert_eq!(
        c.cmd_raw(&["COMMIT", "a", "b", "c"]),
        "-ERR wrong number of arguments for 'COMMIT' command\r\n"
    );
    let cached = c.cmd_raw(&["TICK", "CACHED"]);
    let w: i64 = cached.trim_start_matches(':').trim().parse().unwrap();
    assert!(w >= v);
}

/// S7 and S8: ZMap in an explicit transaction, and SESSION.CLOSE rolling back.
#[test]
fn s7_s8_explicit_transactions() {
    let server = ready();
    let mut c = server.connect();
    let mut other = server.connect();
    assert_eq!(c.cmd_raw(&["BEGIN"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZSET", "key1", "100"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZSET", "key2", "200"]), "+OK\r\n");
    let size = c.cmd_raw(&["GETAPPROXIMATESIZE"]);
    assert!(size.trim_start_matches(':').trim().parse::<i64>().unwrap() > 0, "{size}");
    assert_eq!(
        c.cmd_raw(&["ZGET", "key1"]),
        "$3\r\n100\r\n",
        "the transaction reads its own writes"
    );
    assert_eq!(other.cmd_raw(&["ZGET", "key1"]), "$-1\r\n", "others do not see them yet");
    let version = c.cmd_raw(&["COMMIT", "RETURNING", "committed-version"]);
    assert!(version.trim_start_matches(':').trim().parse::<i64>().unwrap() > 0, "{version}");
    assert_eq!(other.cmd_raw(&["ZGET", "key1"]), "$3\r\n100\r\n");

    assert_eq!(c.cmd_raw(&["BEGIN"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZSET", "tmp", "x"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["SESSION.CLOSE"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ROLLBACK"]), "-TRANSACTION there is no transaction in progress.\r\n");
    assert_eq!(c.cmd_raw(&["ZGET", "tmp"]), "$-1\r\n");

    // A closed connection rolls back too.
    let mut gone = server.connect();
    gone.cmd(&["BEGIN"]);
    gone.cmd(&["ZSET", "lost", "x"]);
    drop(gone);
    assert_eq!(c.cmd_raw(&["ZGET", "lost"]), "$-1\r\n");
    // A versionstamp comes back from a transaction that wrote.
    c.cmd(&["BEGIN"]);
    c.cmd(&["ZSET", "k", "v"]);
    let stamp = c.read_after(&["COMMIT", "RETURNING", "versionstamp"]);
    assert!(stamp.starts_with("$10\r\n"), "{stamp}");
}

/// S9 and S10: range inclusivity, wildcards, limits, end-exclusive deletes.
#[test]
fn s9_s10_ranges() {
    let server = ready();
    let mut c = server.connect();
    for i in 0..10 {
        c.cmd(&["ZSET", &format!("key-{i}"), &format!("value-{i}")]);
    }
    let pairs = |raw: &str| raw.matches("key-").count();
    let r = c.cmd_raw(&["ZGETRANGE", "*", "key-5"]);
    assert!(
        r.starts_with("*6\r\n*2\r\n$5\r\nkey-0\r\n$7\r\nvalue-0\r\n")
            && r.ends_with("$5\r\nkey-5\r\n$7\r\nvalue-5\r\n"),
        "{r}"
    );
    let r = c.cmd_raw(&["ZGETRANGE", "*", "key-5", "REVERSE"]);
    assert!(
        r.starts_with("*6\r\n*2\r\n$5\r\nkey-5\r\n")
            && r.ends_with("$5\r\nkey-0\r\n$7\r\nvalue-0\r\n"),
        "{r}"
    );
    let r = c.cmd_raw(&["ZGETRANGE", "key-0", "key-9", "LIMIT", "3"]);
    assert!(r.starts_with("*3\r\n") && r.contains("key-2") && !r.contains("key-3"), "{r}");
    assert_eq!(pairs(&c.cmd_raw(&["ZGETRANGE", "*", "*"])), 10);
    let r = c.cmd_raw(&[
        "ZGETRANGE",
        "key-2",
        "key-4",
        "BEGIN_KEY_SELECTOR",
        "first_greater_than",
        "END_KEY_SELECTOR",
        "first_greater_or_equal",
    ]);
    assert_eq!(r, "*1\r\n*2\r\n$5\r\nkey-3\r\n$7\r\nvalue-3\r\n");
    assert_eq!(
        c.cmd_raw(&["ZGETRANGE", "a", "b", "LIMIT", "x"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["ZGETKEY", "key-3", "KEY_SELECTOR", "first_greater_than"]),
        "$5\r\nkey-4\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["ZGETKEY", "key-9", "KEY_SELECTOR", "first_greater_than"]),
        "$-1\r\n",
        "stays inside the namespace"
    );
    let size = c.cmd_raw(&["ZGETRANGESIZE", "*", "*"]);
    assert!(size.trim_start_matches(':').trim().parse::<i64>().unwrap() > 0, "{size}");

    assert_eq!(c.cmd_raw(&["ZDELRANGE", "key-0", "key-5"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZGET", "key-4"]), "$-1\r\n");
    assert_eq!(c.cmd_raw(&["ZGET", "key-5"]), "$7\r\nvalue-5\r\n");
    assert_eq!(c.cmd_raw(&["ZDEL", "key-5"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZDEL", "key-5"]), "+OK\r\n");
    assert_eq!(pairs(&c.cmd_raw(&["ZGETRANGE", "*", "*"])), 4);
}

/// S11 and S12.
#[test]
fn s11_s12_typed_values_and_mutations() {
    let server = ready();
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["ZINC.I64", "counter", "10"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZINC.I64", "counter", "20"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZGET.I64", "counter"]), ":30\r\n");
    assert_eq!(c.cmd_raw(&["ZSET.I64", "n", "-7"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZGET.I64", "n"]), ":-7\r\n");
    assert_eq!(c.cmd_raw(&["ZSET", "badkey", "abc"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["ZGET.I64", "badkey"]),
        "-ERR Invalid stored value: expected 8-byte two's-complement int64\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["ZSET.F64", "price", "NaN"]),
        "-ERR Invalid value: must be a finite IEEE-754 double\r\n"
    );
    assert_eq!(c.cmd_raw(&["ZINC.F64", "f", "1.7976931348623157E308"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["ZINC.F64", "f", "1.7976931348623157E308"]),
        "-ERR Resulting value is not a finite IEEE-754 double (overflow or invalid operation)\r\n"
    );
    assert_eq!(c.cmd_raw(&["ZSET.F64", "g", "2.5"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["ZGET.F64", "g"]),
        "$3\r\n2.5\r\n",
        "a double is a bulk string in RESP2"
    );
    assert_eq!(
        c.cmd_raw(&["ZGET.F64", "badkey"]),
        "-ERR Invalid stored value: expected 8-byte IEEE-754 double\r\n"
    );
    assert_eq!(c.cmd_raw(&["ZSET.F64", "g", "abc"]), "-ERR value is not a valid float\r\n");
    for v in ["1.5", "3.0", "4.5"] {
        assert_eq!(c.cmd_raw(&["ZINC.D128", "d", v]), "+OK\r\n");
    }
    assert_eq!(c.cmd_raw(&["ZGET.D128", "d"]), "$3\r\n9.0\r\n");
    assert_eq!(c.cmd_raw(&["ZSET.D128", "e", "-12.50"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZGET.D128", "e"]), "$6\r\n-12.50\r\n");
    assert_eq!(c.cmd_raw(&["ZSET.D128", "e", "twelve"]), "-ERR invalid decimal\r\n");
    assert_eq!(
        c.cmd_raw(&["ZSET.D128", "e", "1E9999"]),
        "-ERR Exponent is out of range for Decimal128 encoding of 1E9999\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["ZGET.D128", "badkey"]),
        "-ERR Invalid stored value: expected 16-byte Decimal128 (IEEE-754 BID)\r\n"
    );
    // The stored bytes are BID, little-endian: 9.0 is coefficient 90 with exponent -1.
    let raw = c.read_after(&["ZGET", "d"]);
    assert!(raw.starts_with("$16\r\nZ\0"), "{raw:?}");
    c.cmd(&["HELLO", "3"]);
    assert_eq!(c.cmd_raw(&["ZGET.F64", "g"]), ",2.5\r\n");
    assert_eq!(c.cmd_raw(&["ZGET.I64", "nothing"]), "_\r\n");

    assert_eq!(c.cmd_raw(&["ZSET", "mykey", "my-value"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZMUTATE", "mykey", "my-value", "COMPARE_AND_CLEAR"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZGET", "mykey"]), "_\r\n");
    assert_eq!(c.cmd_raw(&["ZMUTATE", "m", "ab", "APPEND_IF_FITS"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZMUTATE", "m", "cd", "append_if_fits"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZGET", "m"]), "$4\r\nabcd\r\n");
    assert_eq!(
        c.cmd_raw(&["ZMUTATE", "m", "x", "EXPLODE"]),
        "-ERR invalid mutation type: EXPLODE\r\n"
    );
    assert_eq!(c.cmd_raw(&["BEGIN"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["ZWATCH", "mykey"]),
        "-ERR ZWATCH is not allowed within a transaction\r\n"
    );
}

/// S14: namespaces isolate ZMaps; NAMESPACE USE inside a transaction retargets what follows.
#[test]
fn s14_namespace_isolation() {
    let server = ready();
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["NAMESPACE", "CREATE", "a"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["NAMESPACE", "CREATE", "b"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["NAMESPACE", "USE", "a"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZSET", "k", "1"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["NAMESPACE", "USE", "b"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZGET", "k"]), "$-1\r\n");
    c.cmd(&["BEGIN"]);
    c.cmd(&["ZSET", "in-b", "x"]);
    c.cmd(&["NAMESPACE", "USE", "a"]);
    c.cmd(&["ZSET", "in-a", "y"]);
    assert_eq!(c.cmd_raw(&["COMMIT"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["ZGET", "in-a"]), "$1\r\ny\r\n");
    assert_eq!(c.cmd_raw(&["ZGET", "in-b"]), "$-1\r\n");
    c.cmd(&["NAMESPACE", "USE", "b"]);
    assert_eq!(c.cmd_raw(&["ZGET", "in-b"]), "$1\r\nx\r\n");
    // A removed namespace cannot be used for data any more.
    c.cmd(&["NAMESPACE", "USE", "global"]);
    assert_eq!(c.cmd_raw(&["NAMESPACE", "REMOVE", "b"]), "+OK\r\n");
    let mut d = server.connect();
    d.cmd(&["NAMESPACE", "USE", "a"]);
    assert_eq!(
        d.cmd_raw(&["NAMESPACE", "USE", "b"]),
        "-NAMESPACEBEINGREMOVED Namespace 'b' is being removed\r\n"
    );
}

#[test]
fn two_clients_conflict_and_exactly_one_commits() {
    let server = ready();
    let mut a = server.connect();
    let mut b = server.connect();
    a.cmd(&["ZSET", "balance", "10"]);
    a.cmd(&["BEGIN"]);
    b.cmd(&["BEGIN"]);
    assert_eq!(a.cmd_raw(&["ZGET", "balance"]), "$2\r\n10\r\n");
    assert_eq!(b.cmd_raw(&["ZGET", "balance"]), "$2\r\n10\r\n");
    a.cmd(&["ZSET", "balance", "11"]);
    b.cmd(&["ZSET", "balance", "12"]);
    let ra = a.cmd_raw(&["COMMIT"]);
    let rb = b.cmd_raw(&["COMMIT"]);
    let conflict =
        "-NOT_COMMITTED Transaction not committed due to conflict with another transaction\r\n";
    assert!((ra == "+OK\r\n") ^ (rb == "+OK\r\n"), "exactly one commits: {ra:?} {rb:?}");
    assert!(ra == conflict || rb == conflict, "{ra:?} {rb:?}");
    // Both are back in auto-commit.
    assert_eq!(a.cmd_raw(&["ROLLBACK"]), "-TRANSACTION there is no transaction in progress.\r\n");
    assert_eq!(b.cmd_raw(&["ROLLBACK"]), "-TRANSACTION there is no transaction in progress.\r\n");
    // With snapshot reads, the same race commits both (the later write wins).
    a.cmd(&["SNAPSHOTREAD", "ON"]);
    b.cmd(&["SNAPSHOTREAD", "ON"]);
    a.cmd(&["BEGIN"]);
    b.cmd(&["BEGIN"]);
    a.cmd(&["ZGET", "balance"]);
    b.cmd(&["ZGET", "balance"]);
    a.cmd(&["ZSET", "balance", "20"]);
    b.cmd(&["ZSET", "balance", "21"]);
    assert_eq!(a.cmd_raw(&["COMMIT"]), "+OK\r\n");
    assert_eq!(b.cmd_raw(&["COMMIT"]), "+OK\r\n");
}

/// A compare-and-set register ("change(key, f)") from BEGIN/ZGET/ZSET/COMMIT with retries: 8
/// clients x 250 increments end at exactly 2,000.
#[test]
fn cas_register_under_contention() {
    let server = ready();
    let addr = server.client;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                for _ in 0..250 {
                    loop {
                        assert_eq!(c.cmd_raw(&["BEGIN"]), "+OK\r\n");
                        let cur = c.cmd_raw(&["ZGET", "register"]);
                        let n: u64 =
                            cur.split("\r\n").nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
                        c.cmd(&["ZSET", "register", &(n + 1).to_string()]);
                        let r = c.cmd_raw(&["COMMIT"]);
                        if r == "+OK\r\n" {
                            break;
                        }
                        assert!(r.starts_with("-NOT_COMMITTED"), "{r}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["ZGET", "register"]), "$4\r\n2000\r\n");
}

#[test]
fn zwatch_wakes_on_change_and_on_delete() {
    let server = ready();
    let mut writer = server.connect();
    writer.cmd(&["ZSET", "w", "1"]);
    for (change, args) in [("a change", vec!["ZSET", "w", "2"]), ("a delete", vec!["ZDEL", "w"])] {
        let mut watcher = server.connect();
        watcher.send_cmd(&["ZWATCH", "w"]);
        // Time for the watch to be set up before the writes below.
        std::thread::sleep(std::time::Duration::from_millis(1000));
        writer.cmd(&["ZSET", "w-other", "x"]);
        watcher.stream.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
        let mut probe = [0u8; 1];
        assert!(
            std::io::Read::read(&mut watcher.stream, &mut probe).is_err(),
            "ZWATCH must block until {change}"
        );
        watcher.stream.set_read_timeout(Some(support::PATIENCE)).unwrap();
        let refs: Vec<&str> = args.iter().map(|s| &**s).collect();
        writer.cmd(&refs);
        assert_eq!(watcher.read_raw(), b"+OK\r\n", "wakes on {change}");
    }
    // A client that leaves while waiting is released: its connection goes away.
    let clients = |c: &mut Raw| {
        let info = support::text(&c.cmd(&["INFO", "clients"]));
        support::info_field(&info, "connected_clients").unwrap().parse::<u32>().unwrap()
    };
    // Several clients waiting on one key (sharing one metadata watch) all wake. A writer keeps
    // changing the key, so a client whose watch was set up late still sees a later change.
    let mut many: Vec<Raw> = (0..5).map(|_| server.connect()).collect();
    for w in &mut many {
        w.send_cmd(&["ZWATCH", "shared"]);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changer = {
        let (stop, addr) = (std::sync::Arc::clone(&stop), server.client);
        std::thread::spawn(move || {
            let mut c = Raw::connect(addr);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                n += 1;
                c.cmd(&["ZSET", "shared", &n.to_string()]);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
    };
    for w in &mut many {
        assert_eq!(w.read_raw(), b"+OK\r\n");
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    changer.join().unwrap();
    drop(many);
    // Wait until only the writer is connected (the watchers above have gone).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while clients(&mut writer) != 1 {
        assert!(std::time::Instant::now() < deadline, "earlier watchers did not leave");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before = 1;
    let mut leaver = server.connect();
    leaver.send_cmd(&["ZWATCH", "never-changes"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(clients(&mut writer), before + 1);
    drop(leaver);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while clients(&mut writer) != before {
        assert!(std::time::Instant::now() < deadline, "the waiting connection was not released");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
