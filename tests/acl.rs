//! ACL users over the wire: Redis's rule syntax with namespace patterns, users shared by every
//! member through the metadata store, `AUTH`/`HELLO AUTH`, rate-limited failures, and an admin
//! port that requires a login once any user has a password.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::{PATIENCE, Raw, Server, bucket_server};

fn ok(c: &mut Raw, args: &[&str]) {
    assert_eq!(c.cmd_raw(args), "+OK\r\n", "{args:?}");
}

#[test]
fn rules_limit_commands_keys_and_namespaces() {
    let server = bucket_server(1);
    support::wait_redis(server.client, 7);
    let mut admin = server.connect();
    ok(&mut admin, &["NAMESPACE", "CREATE", "shop.orders"]);
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "alice",
            "on",
            ">wonderland",
            "~cache:*",
            "+@read",
            "+set",
            "+@zmap",
            "+@namespace",
            "+@bucket",
            "+@transaction",
            "ns~shop.*",
        ],
    );
    let mut alice = server.connect();
    ok(&mut alice, &["AUTH", "alice", "wonderland"]);
    assert_eq!(
        alice.cmd_raw(&["ACL", "WHOAMI"]).as_str(),
        "-NOPERM User alice has no permissions to run the 'acl|whoami' command\r\n"
    );
    ok(&mut alice, &["SET", "cache:1", "v"]);
    assert_eq!(alice.cmd_raw(&["GET", "cache:1"]), "$1\r\nv\r\n");
    assert_eq!(alice.cmd_raw(&["SET", "other", "v"]), "-NOPERM No permissions to access a key\r\n");
    assert_eq!(
        alice.cmd_raw(&["MSET", "cache:2", "a"]),
        "-NOPERM User alice has no permissions to run the 'mset' command\r\n"
    );
    assert_eq!(
        alice.cmd_raw(&["DEL", "cache:1"]),
        "-NOPERM User alice has no permissions to run the 'del' command\r\n"
    );
    // Namespaces: the session starts in `global`, which alice may not use.
    assert_eq!(
        alice.cmd_raw(&["ZSET", "k", "v"]),
        "-NOPERM No permissions to access the namespace 'global'\r\n"
    );
    assert_eq!(
        alice.cmd_raw(&["NAMESPACE", "USE", "global"]),
        "-NOPERM No permissions to access the namespace 'global'\r\n"
    );
    ok(&mut alice, &["NAMESPACE", "USE", "shop.orders"]);
    ok(&mut alice, &["ZSET", "k", "v"]);
    assert_eq!(alice.cmd_raw(&["ZGET", "k"]), "$1\r\nv\r\n");
    ok(&mut alice, &["BUCKET.CREATE", "orders", "SHARDS", "0"]);
    assert!(alice.cmd_raw(&["BUCKET.INSERT", "orders", "DOCS", "{a: 1}"]).starts_with("*1\r\n"));
    // Refused commands change nothing and are counted as failures, not run.
    assert_eq!(admin.cmd_raw(&["EXISTS", "other"]), ":0\r\n");
    // MULTI checks each command as it is queued, as Redis does.
    ok(&mut alice, &["MULTI"]);
    assert!(alice.cmd_raw(&["DEL", "cache:1"]).starts_with("-NOPERM"));
    assert!(alice.cmd_raw(&["EXEC"]).starts_with("-EXECABORT"));
    // Changing the user applies to the open connection at its next command.
    ok(&mut admin, &["ACL", "SETUSER", "alice", "+del"]);
    assert_eq!(alice.cmd_raw(&["DEL", "cache:1"]), ":1\r\n");
    ok(&mut admin, &["ACL", "SETUSER", "alice", "-@all", "+get"]);
    assert!(alice.cmd_raw(&["SET", "cache:1", "v"]).starts_with("-NOPERM User alice"));
    // HELLO AUTH logs in too; a wrong password is refused with Redis's text.
    let mut again = server.connect();
    assert!(again.cmd_raw(&["HELLO", "3", "AUTH", "alice", "wonderland"]).starts_with('%'));
    assert_eq!(
        again.cmd_raw(&["AUTH", "alice", "wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    // A disabled user cannot log in.
    ok(&mut admin, &["ACL", "SETUSER", "alice", "off"]);
    assert!(server.connect().cmd_raw(&["AUTH", "alice", "wonderland"]).starts_with("-WRONGPASS"));
}

#[test]
fn acl_commands_describe_and_change_users() {
    let server = bucket_server(1);
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["ACL", "WHOAMI"]), "$7\r\ndefault\r\n");
    assert_eq!(c.cmd_raw(&["ACL", "USERS"]), "*1\r\n$7\r\ndefault\r\n");
    ok(&mut c, &["ACL", "SETUSER", "bob", "on", "nopass", "~app:*", "+get", "ns~app"]);
    let list = c.cmd_raw(&["ACL", "LIST"]);
    assert!(list.contains("user bob on nopass ~app:* ns~app -@all +get\r\n"), "{list}");
    assert!(list.contains("user default on nopass ~* ns~* +@all\r\n"), "{list}");
    let user = c.cmd_raw(&["ACL", "GETUSER", "bob"]);
    assert!(user.starts_with("*14\r\n$5\r\nflags\r\n*2\r\n$2\r\non\r\n$6\r\nnopass\r\n"), "{user}");
    assert!(user.contains("$8\r\ncommands\r\n$10\r\n-@all +get\r\n"), "{user}");
    assert!(user.contains("$4\r\nkeys\r\n$6\r\n~app:*\r\n"), "{user}");
    assert!(user.contains("$10\r\nnamespaces\r\n$6\r\nns~app\r\n"), "{user}");
    assert_eq!(c.cmd_raw(&["ACL", "GETUSER", "nobody"]), "$-1\r\n");
    // A bad rule changes nothing.
    assert_eq!(
        c.cmd_raw(&["ACL", "SETUSER", "bob", "+set", "+nosuchcommand"]),
        "-ERR Error in ACL SETUSER modifier '+nosuchcommand': Unknown command or category name in ACL\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["ACL", "SETUSER", "bob", "sideways"]),
        "-ERR Error in ACL SETUSER modifier 'sideways': Syntax error\r\n"
    );
    assert!(c.cmd_raw(&["ACL", "GETUSER", "bob"]).contains("$10\r\n-@all +get\r\n"));
    assert!(c.cmd_raw(&["ACL", "CAT"]).contains("$4\r\nzmap\r\n"));
    assert!(c.cmd_raw(&["ACL", "CAT", "zmap"]).contains("$4\r\nzset\r\n"));
    assert_eq!(c.cmd_raw(&["ACL", "CAT", "nosuch"]), "-ERR Unknown category 'nosuch'\r\n");
    // Deleting a user closes its connections.
    let mut bob = server.connect();
    ok(&mut bob, &["AUTH", "bob", "anything"]);
    assert_eq!(c.cmd_raw(&["ACL", "DELUSER", "bob", "ghost"]), ":1\r\n");
    bob.send_cmd(&["GET", "app:1"]);
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut bob.stream, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the deleted user's connection stays open: {:?}", &buf[..n]);
    assert_eq!(
        c.cmd_raw(&["ACL", "DELUSER", "default"]),
        "-ERR The 'default' user cannot be removed\r\n"
    );
    assert_eq!(c.cmd_raw(&["ACL", "USERS"]), "*1\r\n$7\r\ndefault\r\n");
}

#[test]
fn every_member_enforces_the_same_users() {
    let server = Server::builder().members(2).arg("--bootstrap").start();
    let mut m0 = Raw::connect(server.clients[0]);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if m0.cmd_raw(&["ACL", "SETUSER", "carol", "on", ">pw", "+ping"]) == "+OK\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "ACL SETUSER never worked");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Member 1 learns of carol through the metadata store. (Polling with AUTH would trip the
    // failed-login limit, so ACL USERS is asked instead.)
    let mut m1 = Raw::connect(server.clients[1]);
    while !m1.cmd_raw(&["ACL", "USERS"]).contains("carol") {
        assert!(Instant::now() < deadline, "member 1 never saw carol");
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&mut m1, &["AUTH", "carol", "pw"]);
    assert_eq!(m1.cmd_raw(&["PING"]), "+PONG\r\n");
    assert!(m1.cmd_raw(&["ECHO", "x"]).starts_with("-NOPERM"));
    // A change made on member 1 reaches member 0, this time through the metadata watch.
    let mut admin1 = Raw::connect(server.clients[1]);
    ok(&mut admin1, &["ACL", "SETUSER", "carol", "+echo"]);
    let mut c0 = Raw::connect(server.clients[0]);
    ok(&mut c0, &["AUTH", "carol", "pw"]);
    while c0.cmd_raw(&["ECHO", "x"]) != "$1\r\nx\r\n" {
        assert!(Instant::now() < deadline, "member 0 never saw carol's change");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn failed_logins_are_rate_limited_per_address() {
    let server = bucket_server(1);
    let mut c = server.connect();
    ok(&mut c, &["ACL", "SETUSER", "dave", "on", ">right", "+@all", "~*"]);
    for _ in 0..10 {
        assert!(c.cmd_raw(&["AUTH", "dave", "wrong"]).starts_with("-WRONGPASS"));
    }
    // The right password is not even checked now, from any connection of this address.
    let refused = server.connect().cmd_raw(&["AUTH", "dave", "right"]);
    assert!(
        refused.starts_with("-ERR too many failed authentication attempts from this address"),
        "{refused}"
    );
}

#[test]
fn the_admin_port_needs_a_login_once_a_user_has_a_password() {
    let server = bucket_server(1);
    assert_eq!(server.connect_admin().cmd_raw(&["PING"]), "+PONG\r\n");
    let mut c = server.connect();
    ok(&mut c, &["ACL", "SETUSER", "ops", "on", ">secret", "+@all", "~*", "ns~*"]);
    let mut a = server.connect_admin();
    assert_eq!(a.cmd_raw(&["PING"]), "-NOAUTH Authentication required.\r\n");
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "LIST-MEMBERS"]), "-NOAUTH Authentication required.\r\n");
    // AUTH is served on the client port only (reference 4.1); HELLO logs in on both.
    assert!(a.cmd_raw(&["HELLO", "2", "AUTH", "ops", "secret"]).starts_with("*14\r\n"));
    assert_eq!(a.cmd_raw(&["PING"]), "+PONG\r\n");
    // The client port still serves the password-less default user.
    assert_eq!(server.connect().cmd_raw(&["PING"]), "+PONG\r\n");
}
