#!/usr/bin/env python3
"""Writes docs/command-reference.md: one section per command of the command table.

Every example is run against a real server started here, and its output is what that server
answered, formatted as redis-cli prints it; the hand-written parts (syntax, reply, errors) sit
beside the examples in this file. Usage, from the repository root after `cargo build`:

    python3 docs/tools/command_reference.py target/debug/kronotop > docs/command-reference.md

The test `commands::tests::every_command_has_a_reference_section` checks that the page has a
section, with syntax, reply, errors and an example, for every command the server serves.
"""

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from resp import Conn, Error, fmt  # noqa: E402

# The ports the page's prompts show are the defaults (network.client.port, network.admin.port),
# whatever free ports the generator's server really used.
SHOWN = {"client": "127.0.0.1:5484", "admin": "127.0.0.1:3320"}
# Long replies (INFO, COMMAND, CLIENT LIST) are cut to this many lines, saying so.
MAX_LINES = 14

GROUPS = [
    ("connection", "Connection and session"),
    ("server", "Server"),
    ("cluster", "Cluster administration"),
    ("namespace", "Namespaces"),
    ("transactions", "Transactions"),
    ("zmap", "ZMap"),
    ("string", "Redis strings"),
    ("hash", "Redis hashes"),
    ("generic", "Redis keys and transactions"),
    ("bucket", "Buckets and BQL"),
    ("volume", "Volumes and replication"),
]

ENTRIES = []


def cmd(name, group, syntax, reply, errors, example, setup=(), notes=None):
    ENTRIES.append(dict(name=name, group=group, syntax=syntax if isinstance(syntax, list) else [syntax],
                        reply=reply, errors=errors, example=example, setup=list(setup), notes=notes))


WRONGTYPE = "`WRONGTYPE Operation against a key holding the wrong kind of value`"
ROUTING = ("`MOVED <slot> <host:port>` when another member serves the key's shard; "
           "`CROSSSLOT Keys in request don't hash to the same slot` for keys of several slots")
NOT_INT = "`ERR value is not an integer or out of range`"

# ---- connection -------------------------------------------------------------------------------
cmd("PING", "connection", "PING [message]", "`PONG`, or the message as a bulk string",
    "more than one argument: the arity error", ["PING", "PING hello"])
cmd("ECHO", "connection", "ECHO message", "the message as a bulk string", "none but arity",
    ["ECHO \"Hello World\""])
cmd("AUTH", "connection", "AUTH [username] password",
    "`OK`; the connection is then authenticated",
    "`WRONGPASS invalid username-password pair or user is disabled.`; without a configured "
    "password, the one-argument form answers `ERR AUTH <password> called without any password "
    "configured for the default user. Are you sure your configuration is correct?`",
    ["AUTH secret"])
cmd("HELLO", "connection", "HELLO [protover [AUTH username password] [SETNAME clientname]]",
    "the server's properties: `server`, `version`, `proto`, `id`, `mode` (`cluster`), `role`, "
    "`modules`; a map in RESP3, a flat array in RESP2. Protocol 3 switches the connection to RESP3",
    "`NOPROTO unsupported protocol version`; `ERR Protocol version is not an integer or out of "
    "range`; `ERR Syntax error in HELLO option '<x>'`; `NOAUTH HELLO must be called with the "
    "client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be "
    "used to authenticate the client and select the RESP protocol version at the same time`",
    ["HELLO 2 SETNAME docs", "HELLO 4"])
cmd("QUIT", "connection", "QUIT", "`OK`, then the server closes the connection",
    "none; allowed before authentication", ["QUIT"])
cmd("CLIENT", "connection", [
    "CLIENT ID", "CLIENT GETNAME", "CLIENT SETNAME name", "CLIENT SETINFO LIB-NAME|LIB-VER value",
    "CLIENT LIST [TYPE normal|pubsub|replica|master] [ID id [id ...]]", "CLIENT INFO",
    "CLIENT KILL ip:port",
    "CLIENT KILL <ID id|ADDR ip:port|LADDR ip:port|USER name|TYPE type|MAXAGE s|SKIPME yes|no> ...",
    "CLIENT HELP"],
    "ID: integer. GETNAME: bulk string or null. SETNAME, SETINFO: `OK`. LIST: one line per "
    "client, `id=… addr=… laddr=… fd=… name=… age=… idle=… flags=… db=0 multi=… cmd=… user=… "
    "resp=… lib-name=… lib-ver=… port=client|admin`; INFO: the caller's line. KILL ip:port: `OK`; "
    "KILL with filters: the number of clients closed (`SKIPME yes` is the default). HELP: lines",
    "`ERR Client names cannot contain spaces, newlines or special characters.`; "
    "`ERR Unrecognized option '<x>'`; `ERR No such client`; "
    "`ERR unknown subcommand '<x>'. Try CLIENT HELP.`",
    ["CLIENT ID", "CLIENT SETNAME reporting", "CLIENT GETNAME", "CLIENT SETNAME \"two words\"",
     "CLIENT SETINFO LIB-NAME docs-lib", "CLIENT KILL 127.0.0.1:1", "CLIENT KILL ID 99999"])
cmd("SESSION.ATTRIBUTE", "connection", ["SESSION.ATTRIBUTE LIST",
                                        "SESSION.ATTRIBUTE SET attribute value"],
    "LIST: map of `reply_type` (`json` or `bson`), `input_type` (`json` or `bson`), `limit` "
    "(documents per cursor batch, default 100) and `object_id_format` (`hex` or `bytes`). "
    "SET: `OK`",
    "`ERR Invalid session attribute: '<x>'`; `ERR Invalid reply type: <x>`; `ERR Invalid input "
    "type: <x>`; `ERR 'limit' must be greater than 0`; `ERR value is not a int or out of range`; "
    "`ERR Invalid versionstamp format: <x>`; `ERR invalid number of parameters`",
    ["SESSION.ATTRIBUTE LIST", "SESSION.ATTRIBUTE SET limit 10", "SESSION.ATTRIBUTE SET limit 0",
     "SESSION.ATTRIBUTE SET colour blue"])
cmd("SESSION.CLOSE", "connection", "SESSION.CLOSE",
    "`OK`; attributes, namespace, snapshot reads, the open transaction (rolled back), cursors and "
    "MULTI state go back to their defaults, while authentication, client name and protocol stay",
    "none but arity", ["SESSION.ATTRIBUTE SET limit 5", "SESSION.CLOSE",
                       "SESSION.ATTRIBUTE LIST"])

# ---- server -----------------------------------------------------------------------------------
cmd("TIME", "server", "TIME", "two bulk strings: Unix time in seconds and the microseconds",
    "none but arity", ["TIME"])
cmd("INFO", "server", "INFO [section [section ...]]",
    "text in `# Section` blocks of `key:value` lines: `server`, `clients`, `memory`, "
    "`persistence`, `stats`, `keyspace`, `cluster` by default; `commandstats` and "
    "`latencystats` on request or with `all`/`everything`. Only measured figures are shown",
    "unknown sections give an empty reply, as in Redis",
    ["INFO server", "INFO commandstats"], setup=["PING"])
cmd("COMMAND", "server", ["COMMAND", "COMMAND COUNT", "COMMAND INFO [name [name ...]]",
                          "COMMAND DOCS [name [name ...]]",
                          "COMMAND LIST [FILTERBY MODULE m|ACLCAT c|PATTERN p]", "COMMAND HELP"],
    "COMMAND and COMMAND INFO: Redis 7's ten-element description per command (name, arity, flags, "
    "first key, last key, step, ACL categories, tips, key specs, subcommands); unknown names give "
    "null. COUNT: integer. DOCS: map of name → `summary`, `since`, `group`, `subcommands`. "
    "LIST: names",
    "`ERR unknown subcommand '<x>'. Try COMMAND HELP.`; `ERR syntax error`",
    ["COMMAND COUNT", "COMMAND INFO get", "COMMAND LIST FILTERBY PATTERN zget*"])
cmd("CONFIG", "server", ["CONFIG GET pattern [pattern ...]",
                         "CONFIG SET name value [name value ...]", "CONFIG RESETSTAT",
                         "CONFIG REWRITE", "CONFIG HELP"],
    "GET: map (flat array in RESP2) of the matching parameters, by glob pattern. SET: `OK`, all "
    "the pairs or none. RESETSTAT: `OK`, clearing the `# Stats` counters, `commandstats`, "
    "`latencystats` and the slow log's counters. Names are in [configuration.md](configuration.md)",
    "`ERR Unknown option or number of arguments for CONFIG SET - '<x>'`; `ERR CONFIG SET failed "
    "(possibly related to argument '<x>') - can't set immutable config`; `ERR CONFIG REWRITE is "
    "not supported yet`",
    ["CONFIG GET maxclients", "CONFIG SET slowlog-max-len 256",
     "CONFIG GET slowlog*", "CONFIG SET dir /tmp", "CONFIG REWRITE"])
cmd("SLOWLOG", "server", ["SLOWLOG GET [count]", "SLOWLOG LEN", "SLOWLOG RESET", "SLOWLOG HELP"],
    "GET: the newest `count` entries (10 by default, -1 for all), each `[id, unix time, "
    "microseconds, [arguments], \"ip:port\", client name]`, at most 32 arguments of 128 bytes as "
    "Redis trims them. LEN: integer. RESET: `OK`. Commands slower than "
    "`server.slowlog_log_slower_than` microseconds (10,000) are kept, at most "
    "`server.slowlog_max_len` (128)",
    "`ERR count should be greater than or equal to -1`; `ERR unknown subcommand '<x>'. Try "
    "SLOWLOG HELP.`",
    ["CONFIG SET slowlog-log-slower-than 0", "SLOWLOG RESET", "ECHO traced",
     "SLOWLOG LEN", "SLOWLOG GET 1", "CONFIG SET slowlog-log-slower-than 10000"])
cmd("ACL", "server", ["ACL SETUSER user [rule [rule ...]]", "ACL GETUSER user",
                      "ACL DELUSER user [user ...]", "ACL LIST", "ACL USERS", "ACL WHOAMI",
                      "ACL CAT [category]", "ACL HELP"],
    "SETUSER: `OK`; the user is stored in the metadata store and every member enforces it. "
    "GETUSER: map of `flags`, `passwords` (salted digests), `commands`, `keys`, `channels` "
    "(always empty), `namespaces`, `selectors`; null for no such user. DELUSER: how many users "
    "were deleted (their connections are closed). LIST: one `user <name> <rules>` line per user. "
    "USERS: names. WHOAMI: this connection's user. CAT: the categories, or one category's "
    "commands. Rules: `on`, `off`, `>password`, `<password`, `nopass`, `resetpass`, `~pattern`, "
    "`allkeys`, `resetkeys`, `ns~pattern` (namespaces for ZMap, bucket and namespace commands; "
    "ours), `allnamespaces`, `resetnamespaces`, `+command`, `-command`, `+command|sub`, "
    "`+@category`, `-@category`, `allcommands`, `nocommands`, `reset`; see "
    "[security.md](security.md)",
    "`ERR Error in ACL SETUSER modifier '<rule>': Syntax error` (or `Unknown command or category "
    "name in ACL`, `no such password`, `… not supported` for `#digest`, `%R~`, `&channel` and "
    "selectors), and the user is left as it was; `ERR The 'default' user cannot be removed`; "
    "`ERR Unknown category '<c>'`; a restricted user gets `NOPERM User <u> has no permissions to "
    "run the '<cmd>' command`, `NOPERM No permissions to access a key` or `NOPERM No permissions "
    "to access the namespace '<ns>'`",
    ["ACL SETUSER reporter on >s3cret ~report:* +@read ns~reports.*",
     "ACL GETUSER reporter", "ACL SETUSER reporter +nosuchcommand", "ACL USERS", "ACL WHOAMI",
     "AUTH reporter s3cret", "GET report:today", "SET report:today done", "ACL WHOAMI",
     "AUTH default anything", "ACL DELUSER reporter", "ACL CAT"])
cmd("DEBUG", "server", ["DEBUG PAUSE-HEARTBEAT ms", "DEBUG REPLICATION-DELAY ms",
                        "DEBUG REPLICATION-DROP per-mille", "DEBUG PAUSE-INDEX-TASKS ms"],
    "`OK`. Fault-test hooks: PAUSE-HEARTBEAT stops this member's heartbeats for that long (the "
    "others judge it dead while it keeps serving); REPLICATION-DELAY answers standbys' "
    "acknowledgements that late; REPLICATION-DROP fails that share of standbys' requests; "
    "PAUSE-INDEX-TASKS holds this member's index builds and dropped-index cleanups for that long "
    "(0 releases them). See [cluster.md](cluster.md#automatic-failover-our-addition)",
    "`ERR DEBUG command not allowed. If the server.enable_debug_command option is set to …` "
    "unless `server.enable_debug_command = true`; `ERR unknown subcommand '<x>'`",
    ["admin> DEBUG REPLICATION-DELAY 0", "admin> DEBUG SLEEP 1"])

# ---- cluster ----------------------------------------------------------------------------------
cmd("KR.ADMIN", "cluster", [
    "KR.ADMIN INITIALIZE-CLUSTER", "KR.ADMIN DESCRIBE-MEMBER", "KR.ADMIN FIND-MEMBER member",
    "KR.ADMIN LIST-MEMBERS", "KR.ADMIN LIST-SILENT-MEMBERS",
    "KR.ADMIN SET-MEMBER-STATUS member RUNNING|STOPPED|UNAVAILABLE|UNKNOWN",
    "KR.ADMIN REMOVE-MEMBER member", "KR.ADMIN DESCRIBE-SHARD REDIS|BUCKET id",
    "KR.ADMIN DESCRIBE-CLUSTER",
    "KR.ADMIN SET-SHARD-STATUS REDIS|BUCKET id|* READWRITE|READONLY|INOPERABLE",
    "KR.ADMIN ROUTE SET|UNSET PRIMARY|STANDBY|SYNC-STANDBY REDIS|BUCKET id|* member [FORCE]",
    "KR.ADMIN DROP-CLUSTER name [token]"],
    "`OK` for the changes; maps (flat arrays in RESP2) for DESCRIBE-MEMBER, FIND-MEMBER, "
    "LIST-MEMBERS, DESCRIBE-SHARD and DESCRIBE-CLUSTER; ids for LIST-SILENT-MEMBERS; a token, then "
    "`OK`, for the two steps of DROP-CLUSTER. Every reply is described in "
    "[cluster.md](cluster.md#kradmin-reference)",
    "`ERR cluster has already been initialized`; `ERR Member: <id> not registered`; `ERR Invalid "
    "member status <v>`; `ERR Member in RUNNING status cannot be removed`; `ERR Member is still "
    "routed: <routes>; move its shards or unset its standby routes first`; `ERR invalid shard "
    "kind`; `ERR invalid shard id`; `ERR Invalid shard status <v>`; the ROUTE preconditions "
    "(`ERR Shard status must not be READWRITE`, `ERR Volume status must be READONLY`, `ERR Standby "
    "is not caught up: …`, …); `ERR no member found with prefix: <p>`",
    ["admin> KR.ADMIN DESCRIBE-SHARD BUCKET 0", "admin> KR.ADMIN FIND-MEMBER 0000",
     "admin> KR.ADMIN SET-SHARD-STATUS BUCKET 0 SLEEPY",
     "admin> KR.ADMIN INITIALIZE-CLUSTER"])
cmd("CLUSTER", "cluster", ["CLUSTER KEYSLOT key", "CLUSTER MYID", "CLUSTER SLOTS",
                           "CLUSTER SHARDS", "CLUSTER NODES", "CLUSTER INFO",
                           "CLUSTER COUNTKEYSINSLOT slot", "CLUSTER GETKEYSINSLOT slot count",
                           "CLUSTER HELP"],
    "Redis 7's formats over the REDIS shards: KEYSLOT an integer (CRC16 of the key or its "
    "`{hash tag}`, mod 16384); MYID the member id; SLOTS ranges with their primary's client "
    "address; SHARDS shards with their nodes; NODES one `<id> <host>:<port>@<admin-port> flags "
    "master 0 <heartbeat> <epoch> connected <ranges>` line per member; INFO `cluster_state`, "
    "`cluster_slots_*`, `cluster_known_nodes`, `cluster_size`, epochs; COUNTKEYSINSLOT and "
    "GETKEYSINSLOT for slots served here",
    "`ERR Invalid slot`; `ERR Invalid number of keys`; `ERR unknown subcommand '<x>'. Try CLUSTER "
    "HELP.`",
    ["CLUSTER KEYSLOT user:1000", "CLUSTER KEYSLOT {user:1000}.followers",
     "SET user:1000 alice", "CLUSTER COUNTKEYSINSLOT 1649", "CLUSTER GETKEYSINSLOT 1649 10",
     "CLUSTER SLOTS"])

# ---- namespace --------------------------------------------------------------------------------
cmd("NAMESPACE", "namespace", ["NAMESPACE CREATE ns", "NAMESPACE USE ns", "NAMESPACE CURRENT",
                               "NAMESPACE EXISTS ns", "NAMESPACE LIST [ns]", "NAMESPACE REMOVE ns",
                               "NAMESPACE PURGE ns", "NAMESPACE MOVE old new"],
    "`OK` for CREATE (parents too), USE, REMOVE, PURGE and MOVE; CURRENT the session's namespace; "
    "EXISTS 1 or 0; LIST the child names. Namespaces are dotted paths of at most 10 segments; "
    "every session starts in `global`. See [cluster.md](cluster.md#namespaces)",
    "`NAMESPACEALREADYEXISTS Namespace already exists: <ns>`; `NOSUCHNAMESPACE No such namespace: "
    "'<ns>'`; `NAMESPACEBEINGREMOVED Namespace '<ns>' is being removed`; `ERR Namespace '<ns>' is "
    "reserved for internal use`; `ERR Namespace depth exceeds maximum allowed depth of 10`; `ERR "
    "Cannot remove the default namespace: '<ns>'`; `ERR Namespace '<ns>' must be logically removed "
    "before purge`; `BARRIERNOTSATISFIED …` (retry later)",
    ["NAMESPACE CREATE shop.orders", "NAMESPACE LIST shop", "NAMESPACE USE shop.orders",
     "NAMESPACE CURRENT", "NAMESPACE EXISTS shop.archive", "NAMESPACE CREATE shop.orders",
     "NAMESPACE USE nowhere", "NAMESPACE REMOVE global"])

# ---- transactions -----------------------------------------------------------------------------
TX_NONE = "`TRANSACTION there is no transaction in progress.`"
cmd("BEGIN", "transactions", "BEGIN",
    "`OK`; the session's ZMap and bucket commands share one metadata transaction until COMMIT, "
    "ROLLBACK, SESSION.CLOSE or disconnection (the last two roll back)",
    "`TRANSACTION there is already a transaction in progress.`",
    ["BEGIN", "ZSET greeting hello", "BEGIN", "COMMIT"])
cmd("COMMIT", "transactions", "COMMIT [RETURNING committed-version|versionstamp]",
    "`OK`; with RETURNING the committed version (-1 when nothing was written) or the 10-byte "
    "versionstamp. Afterwards the session is in auto-commit again, also after a failure",
    TX_NONE + "; `NOT_COMMITTED Transaction not committed due to conflict with another "
    "transaction`; `TRANSACTION_TOO_OLD …` past five seconds; `ERR No arguments given for "
    "RETURNING`; `ERR Illegal argument: <v>`",
    ["BEGIN", "ZSET counter:a 1", "COMMIT RETURNING committed-version", "COMMIT"])
cmd("ROLLBACK", "transactions", "ROLLBACK", "`OK`; the transaction's writes are dropped", TX_NONE,
    ["BEGIN", "ZSET draft 1", "ROLLBACK", "ZGET draft", "ROLLBACK"])
cmd("SNAPSHOTREAD", "transactions", "SNAPSHOTREAD ON|OFF",
    "`OK`; with ON, reads add no read conflicts until OFF or SESSION.CLOSE",
    "`ERR illegal argument for SNAPSHOTREAD: '<v>'`",
    ["SNAPSHOTREAD ON", "SNAPSHOTREAD maybe", "SNAPSHOTREAD OFF"])
cmd("GETREADVERSION", "transactions", "GETREADVERSION", "the transaction's read version",
    TX_NONE, ["GETREADVERSION", "BEGIN", "GETREADVERSION", "ROLLBACK"])
cmd("GETAPPROXIMATESIZE", "transactions", "GETAPPROXIMATESIZE",
    "the transaction's approximate size in bytes", TX_NONE,
    ["BEGIN", "ZSET k v", "GETAPPROXIMATESIZE", "ROLLBACK"])
cmd("TICK", "transactions", "TICK FRESH|CACHED",
    "a read version of the metadata store; CACHED reuses one for up to a second and never goes "
    "backwards", "`ERR illegal argument for TICK: '<v>'`",
    ["TICK FRESH", "TICK SOON"])

# ---- zmap -------------------------------------------------------------------------------------
cmd("ZSET", "zmap", "ZSET key value", "`OK`",
    "`ERR Key length exceeds the maximum of 10000 bytes` and the like past the store's limits "
    "(keys 10,000 bytes, values 100,000 bytes)", ["ZSET fruit:apple red", "ZGET fruit:apple"])
cmd("ZGET", "zmap", "ZGET key", "the value, or null", "none but arity",
    ["ZSET fruit:apple red", "ZGET fruit:apple", "ZGET fruit:kiwi"])
cmd("ZDEL", "zmap", "ZDEL key", "`OK`, whether or not the key existed", "none but arity",
    ["ZSET fruit:pear green", "ZDEL fruit:pear", "ZGET fruit:pear"])
cmd("ZDELRANGE", "zmap", "ZDELRANGE begin end",
    "`OK`; deletes the keys of `[begin, end)`; `*` is the start or the end of the namespace's ZMap",
    "none but arity", ["ZSET tmp:1 a", "ZSET tmp:2 b", "ZDELRANGE tmp:1 tmp:3",
                       "ZGETRANGE tmp: tmp:~"])
cmd("ZGETRANGE", "zmap",
    "ZGETRANGE begin end [LIMIT n] [REVERSE] [BEGIN_KEY_SELECTOR s] [END_KEY_SELECTOR s]",
    "array of `[key, value]` pairs, at most LIMIT (100 by default). Selectors "
    "`first_greater_or_equal` (the begin default), `first_greater_than` (the end default, so both "
    "ends are inclusive), `last_less_than`, `last_less_or_equal`; `*` is the namespace's edge; "
    "results never leave the namespace",
    "`ERR Invalid key selector: <s>`; `ERR syntax error`; " + NOT_INT,
    ["ZSET fruit:apple red", "ZSET fruit:banana yellow", "ZSET fruit:cherry red",
     "ZGETRANGE fruit:a fruit:z LIMIT 2", "ZGETRANGE * * REVERSE LIMIT 1"])
cmd("ZGETKEY", "zmap", "ZGETKEY key [KEY_SELECTOR s]",
    "the key the selector resolves to (first_greater_or_equal by default), or null outside the "
    "namespace", "`ERR Invalid key selector: <s>`",
    ["ZSET fruit:apple red", "ZSET fruit:cherry red", "ZGETKEY fruit:b",
     "ZGETKEY fruit:b KEY_SELECTOR last_less_than"])
cmd("ZGETRANGESIZE", "zmap", "ZGETRANGESIZE begin end",
    "the metadata store's estimate, in bytes, of the keys and values in `[begin, end)`",
    "none but arity", ["ZGETRANGESIZE fruit:a fruit:z"])
cmd("ZMUTATE", "zmap", "ZMUTATE key param type",
    "`OK`. Types `ADD`, `BIT_AND`, `BIT_OR`, `BIT_XOR`, `APPEND_IF_FITS`, `MAX`, `MIN`, "
    "`SET_VERSIONSTAMPED_VALUE`, `BYTE_MIN`, `BYTE_MAX`, `COMPARE_AND_CLEAR`, with FoundationDB's "
    "byte semantics (little-endian for the arithmetic ones); no read conflict",
    "`ERR invalid mutation type: <t>`",
    ["ZMUTATE visits \"\\x01\\x00\\x00\\x00\" ADD", "ZMUTATE visits \"\\x01\\x00\\x00\\x00\" ADD",
     "ZGET visits", "ZMUTATE visits 1 MULTIPLY"])
cmd("ZSET.I64", "zmap", "ZSET.I64 key n", "`OK`; stores 8 bytes little-endian two's complement",
    NOT_INT, ["ZSET.I64 stock 42", "ZGET stock", "ZSET.I64 stock lots"])
cmd("ZINC.I64", "zmap", "ZINC.I64 key n",
    "`OK`; a conflict-free atomic add (a missing key counts as 0)", NOT_INT,
    ["ZSET.I64 stock 42", "ZINC.I64 stock -2", "ZGET.I64 stock"])
cmd("ZGET.I64", "zmap", "ZGET.I64 key", "integer, or null",
    "`ERR Invalid stored value: expected 8-byte two's-complement int64`",
    ["ZINC.I64 hits 3", "ZGET.I64 hits", "ZSET notanumber abc", "ZGET.I64 notanumber"])
cmd("ZSET.F64", "zmap", "ZSET.F64 key x", "`OK`; stores a finite IEEE-754 double",
    "`ERR Invalid value: must be a finite IEEE-754 double`; `ERR value is not a valid float`",
    ["ZSET.F64 ratio 0.25", "ZGET.F64 ratio", "ZSET.F64 ratio inf"])
cmd("ZINC.F64", "zmap", "ZINC.F64 key x", "`OK` (a read-modify-write in the transaction)",
    "`ERR Invalid delta: must be a finite IEEE-754 double`; `ERR Resulting value is not a finite "
    "IEEE-754 double (overflow or invalid operation)`",
    ["ZSET.F64 ratio 0.25", "ZINC.F64 ratio 0.5", "ZGET.F64 ratio"])
cmd("ZGET.F64", "zmap", "ZGET.F64 key", "a double (RESP3) or bulk string (RESP2), or null",
    "`ERR Invalid stored value: expected 8-byte IEEE-754 double`",
    ["ZSET.F64 pi 3.14159", "ZGET.F64 pi"])
cmd("ZSET.D128", "zmap", "ZSET.D128 key decimal",
    "`OK`; stores IEEE-754 decimal128 (BID, 16 bytes little-endian), keeping the scale",
    "`ERR invalid decimal`; `ERR Exponent is out of range for Decimal128 encoding of <v>`",
    ["ZSET.D128 price 19.90", "ZGET.D128 price", "ZSET.D128 price twenty"])
cmd("ZINC.D128", "zmap", "ZINC.D128 key decimal", "`OK` (a read-modify-write in the transaction)",
    "`ERR invalid decimal`; `ERR Invalid stored value: expected 16-byte Decimal128 (IEEE-754 BID)`",
    ["ZSET.D128 total 1.5", "ZINC.D128 total 3.0", "ZINC.D128 total 4.5", "ZGET.D128 total"])
cmd("ZGET.D128", "zmap", "ZGET.D128 key", "the decimal in plain notation, or null",
    "`ERR Invalid stored value: expected 16-byte Decimal128 (IEEE-754 BID)`; `ERR Invalid stored "
    "value: Decimal128 is not representable as BigDecimal`",
    ["ZSET.D128 rate 0.075", "ZGET.D128 rate"])
cmd("ZWATCH", "zmap", "ZWATCH key",
    "`OK` once the key's value changes or the key is deleted; blocks the connection until then "
    "(all clients waiting on a key share one metadata watch)",
    "`ERR ZWATCH is not allowed within a transaction`",
    ["BEGIN", "ZWATCH fruit:apple", "ROLLBACK"])

# ---- strings ----------------------------------------------------------------------------------
cmd("GET", "string", "GET key", "bulk string, or null", WRONGTYPE + "; " + ROUTING,
    ["SET greeting hello", "GET greeting", "GET nosuchkey"])
cmd("SET", "string", "SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]",
    "`OK`; null when NX or XX is not met; the old value (or null) with GET",
    "`ERR syntax error`; `ERR invalid expire time in 'set' command`; " + WRONGTYPE + " with GET",
    ["SET session:1 token EX 60", "TTL session:1", "SET session:1 other NX",
     "SET session:1 renewed XX GET", "SET session:1 x EX 0"])
cmd("SETNX", "string", "SETNX key value", "1 if the key was set, 0 if it existed", ROUTING,
    ["SETNX lock owner-a", "SETNX lock owner-b"])
cmd("SETEX", "string", "SETEX key seconds value", "`OK`",
    "`ERR invalid expire time in 'setex' command`; " + NOT_INT,
    ["SETEX cache:1 30 payload", "TTL cache:1", "SETEX cache:1 -5 payload"])
cmd("PSETEX", "string", "PSETEX key milliseconds value", "`OK`",
    "`ERR invalid expire time in 'psetex' command`",
    ["PSETEX cache:2 1500 payload", "PTTL cache:2"])
cmd("MGET", "string", "MGET key [key ...]",
    "array of values, null for missing keys or keys that are not strings",
    "`CROSSSLOT Keys in request don't hash to the same slot`",
    ["MSET {u}:a 1 {u}:b 2", "MGET {u}:a {u}:b {u}:c", "MGET a b"])
cmd("MSET", "string", "MSET key value [key value ...]", "`OK`",
    "an odd number of arguments: the arity error; CROSSSLOT",
    ["MSET {u}:a 1 {u}:b 2", "MSET {u}:a"])
cmd("MSETNX", "string", "MSETNX key value [key value ...]",
    "1 when every key was set, 0 (and nothing set) when one existed", "as MSET",
    ["MSETNX {n}:x 1 {n}:y 2", "MSETNX {n}:y 3 {n}:z 4", "MGET {n}:x {n}:y {n}:z"])
cmd("GETSET", "string", "GETSET key value", "the old value, or null", WRONGTYPE,
    ["SET mode fast", "GETSET mode safe", "GET mode"])
cmd("GETDEL", "string", "GETDEL key", "the value, or null; the key is deleted", WRONGTYPE,
    ["SET once secret", "GETDEL once", "GETDEL once"])
cmd("GETEX", "string", "GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]",
    "the value, or null; the expiry changes as asked",
    "`ERR invalid expire time in 'getex' command`; `ERR syntax error`",
    ["SET temp v", "GETEX temp EX 100", "TTL temp", "GETEX temp PERSIST", "TTL temp"])
cmd("APPEND", "string", "APPEND key value", "the new length",
    WRONGTYPE + "; `ERR string exceeds maximum allowed size (proto-max-bulk-len)` past 512 MB",
    ["APPEND log first", "APPEND log \",second\"", "GET log"])
cmd("STRLEN", "string", "STRLEN key", "the length, 0 for a missing key", WRONGTYPE,
    ["SET name kronotop", "STRLEN name", "STRLEN missing"])
for name, syn, ex in [("INCR", "INCR key", ["SET visits 10", "INCR visits"]),
                      ("DECR", "DECR key", ["SET visits 10", "DECR visits"]),
                      ("INCRBY", "INCRBY key increment", ["SET visits 10", "INCRBY visits 5"]),
                      ("DECRBY", "DECRBY key decrement", ["SET visits 10", "DECRBY visits 3"])]:
    cmd(name, "string", syn, "the new value; a missing key counts as 0",
        NOT_INT + "; `ERR increment or decrement would overflow`; " + WRONGTYPE,
        ex + ["SET word hello", f"{name} word" + ("" if name in ("INCR", "DECR") else " 1")])
cmd("INCRBYFLOAT", "string", "INCRBYFLOAT key increment", "the new value as a bulk string",
    "`ERR value is not a valid float`; `ERR increment would produce NaN or Infinity`",
    ["SET price 10.50", "INCRBYFLOAT price 0.1", "INCRBYFLOAT price 5.0e3"])
cmd("GETRANGE", "string", "GETRANGE key start end",
    "the substring of bytes `[start, end]`, negative indexes counting from the end",
    NOT_INT, ["SET text \"This is a string\"", "GETRANGE text 0 3", "GETRANGE text -3 -1"])
cmd("SUBSTR", "string", "SUBSTR key start end", "as GETRANGE", NOT_INT,
    ["SET text \"This is a string\"", "SUBSTR text 5 6"])
cmd("SETRANGE", "string", "SETRANGE key offset value",
    "the new length; the gap is filled with zero bytes",
    "`ERR offset is out of range`; " + WRONGTYPE,
    ["SET key1 \"Hello World\"", "SETRANGE key1 6 Redis", "GET key1", "SETRANGE key1 -1 x"])

# ---- hashes -----------------------------------------------------------------------------------
cmd("HSET", "hash", "HSET key field value [field value ...]", "the number of fields added",
    "an odd number of field/value arguments: the arity error; " + WRONGTYPE,
    ["HSET user:1 name ada born 1815", "HSET user:1 name ada lang en", "SET plain x",
     "HSET plain f v"])
cmd("HMSET", "hash", "HMSET key field value [field value ...]", "`OK`", "as HSET",
    ["HMSET user:2 name alan born 1912", "HGETALL user:2"])
cmd("HGET", "hash", "HGET key field", "the value, or null", WRONGTYPE,
    ["HSET user:1 name ada", "HGET user:1 name", "HGET user:1 email"])
cmd("HMGET", "hash", "HMGET key field [field ...]", "array of values, null for missing fields",
    WRONGTYPE, ["HSET user:1 name ada born 1815", "HMGET user:1 name email born"])
cmd("HDEL", "hash", "HDEL key field [field ...]",
    "the number of fields removed; the key goes with its last field", WRONGTYPE,
    ["HSET tags a 1 b 2", "HDEL tags a c", "HDEL tags b", "EXISTS tags"])
cmd("HKEYS", "hash", "HKEYS key", "the field names", WRONGTYPE,
    ["HSET user:3 name grace lang cobol", "HKEYS user:3"])
cmd("HVALS", "hash", "HVALS key", "the values", WRONGTYPE,
    ["HSET user:3 name grace lang cobol", "HVALS user:3"])
cmd("HLEN", "hash", "HLEN key", "the number of fields, 0 for a missing key", WRONGTYPE,
    ["HSET user:3 name grace lang cobol", "HLEN user:3"])
cmd("HGETALL", "hash", "HGETALL key",
    "fields and values: a map in RESP3, a flat array in RESP2", WRONGTYPE,
    ["HSET user:3 name grace lang cobol", "HGETALL user:3"])
cmd("HRANDFIELD", "hash", "HRANDFIELD key [count [WITHVALUES]]",
    "without count a field or null; with count an array of distinct fields (a negative count "
    "allows repeats); with WITHVALUES field/value pairs (two-element arrays in RESP3)",
    NOT_INT + "; `ERR syntax error`",
    ["HSET coin heads 1 tails 2", "HRANDFIELD coin 5", "HRANDFIELD coin -3"])
cmd("HINCRBY", "hash", "HINCRBY key field increment", "the new value",
    "`ERR hash value is not an integer`; `ERR increment or decrement would overflow`",
    ["HINCRBY stats views 5", "HINCRBY stats views -2", "HSET stats name x",
     "HINCRBY stats name 1"])
cmd("HINCRBYFLOAT", "hash", "HINCRBYFLOAT key field increment", "the new value as a bulk string",
    "`ERR hash value is not a float`; `ERR increment would produce NaN or Infinity`",
    ["HINCRBYFLOAT stats score 1.5", "HINCRBYFLOAT stats score 0.25"])
cmd("HEXISTS", "hash", "HEXISTS key field", "1 or 0", WRONGTYPE,
    ["HSET user:1 name ada", "HEXISTS user:1 name", "HEXISTS user:1 email"])
cmd("HSTRLEN", "hash", "HSTRLEN key field", "the length of the value, 0 when missing",
    WRONGTYPE, ["HSET user:1 name ada", "HSTRLEN user:1 name"])
cmd("HSETNX", "hash", "HSETNX key field value", "1 if set, 0 if the field existed", WRONGTYPE,
    ["HSETNX user:1 email ada@example.com", "HSETNX user:1 email other@example.com"])
cmd("HSCAN", "hash", "HSCAN key cursor [MATCH pattern] [COUNT n] [NOVALUES]",
    "`[next cursor, [field, value, …]]`; 0 as the next cursor ends the iteration",
    "`ERR invalid cursor`; `ERR syntax error`",
    ["HSET user:4 name linus lang c os linux", "HSCAN user:4 0 MATCH l*",
     "HSCAN user:4 0 NOVALUES"])

# ---- generic ----------------------------------------------------------------------------------
cmd("DEL", "generic", "DEL key [key ...]", "the number of keys that existed", ROUTING,
    ["MSET {d}:1 a {d}:2 b", "DEL {d}:1 {d}:2 {d}:3"])
cmd("UNLINK", "generic", "UNLINK key [key ...]", "as DEL", ROUTING,
    ["SET scratch 1", "UNLINK scratch"])
cmd("EXISTS", "generic", "EXISTS key [key ...]", "how many of the keys exist (repeats count)",
    ROUTING, ["SET present 1", "EXISTS present present absent"])
cmd("TOUCH", "generic", "TOUCH key [key ...]",
    "how many of the keys exist (there is no LRU clock to update)", ROUTING,
    ["SET present 1", "TOUCH present absent"])
for name, unit in [("EXPIRE", "seconds"), ("PEXPIRE", "milliseconds"),
                   ("EXPIREAT", "a Unix time in seconds"), ("PEXPIREAT", "a Unix time in milliseconds")]:
    arg = "1000" if not name.endswith("AT") else ("4102444800" if name == "EXPIREAT" else "4102444800000")
    cmd(name, "generic", f"{name} key n [NX|XX|GT|LT]",
        f"1 when the expiry ({unit}) was set, 0 when the key is missing or the condition failed; "
        "a time in the past deletes the key",
        "`ERR Unsupported option <x>`; `ERR NX and XX, GT or LT options at the same time are not "
        f"compatible`; `ERR invalid expire time in '{name.lower()}' command` on overflow; " + NOT_INT,
        ["SET temp v", f"{name} temp {arg}", f"{name} temp {arg} NX", f"{name} temp {arg} NX XX"])
for name, unit in [("TTL", "seconds"), ("PTTL", "milliseconds")]:
    cmd(name, "generic", f"{name} key", f"the {unit} left; -1 without expiry; -2 for a missing key",
        "none but arity", ["SET temp v EX 100", f"{name} temp", "SET forever v", f"{name} forever",
                           f"{name} missing"])
for name, unit in [("EXPIRETIME", "seconds"), ("PEXPIRETIME", "milliseconds")]:
    cmd(name, "generic", f"{name} key",
        f"the expiry as a Unix time in {unit}; -1 without expiry; -2 for a missing key",
        "none but arity", ["SET temp v EXAT 4102444800", f"{name} temp", f"{name} missing"])
cmd("PERSIST", "generic", "PERSIST key", "1 when an expiry was removed, 0 otherwise",
    "none but arity", ["SET temp v EX 100", "PERSIST temp", "PERSIST temp"])
cmd("TYPE", "generic", "TYPE key", "`string`, `hash` or `none`", "none but arity",
    ["SET s v", "HSET h f v", "TYPE s", "TYPE h", "TYPE nothing"])
cmd("RENAME", "generic", "RENAME key newkey", "`OK`; newkey is overwritten",
    "`ERR no such key`; CROSSSLOT when the names hash to different slots",
    ["SET {r}:old v", "RENAME {r}:old {r}:new", "GET {r}:new", "RENAME {r}:old {r}:other"])
cmd("RENAMENX", "generic", "RENAMENX key newkey", "1 when renamed, 0 when newkey exists",
    "`ERR no such key`; CROSSSLOT", ["MSET {r}:a 1 {r}:b 2", "RENAMENX {r}:a {r}:b"])
cmd("RANDOMKEY", "generic", "RANDOMKEY", "a key of the shards served here, or null",
    "none but arity", ["SET only-key v", "RANDOMKEY"], setup=["FLUSHALL"])
cmd("DBSIZE", "generic", "DBSIZE", "the number of keys of the shards served here",
    "none but arity", ["FLUSHALL", "MSET {k}:1 a {k}:2 b", "DBSIZE"])
cmd("SCAN", "generic", "SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]",
    "`[next cursor, [key, …]]`; the cursor is the next slot to visit, 0 when done; only the "
    "shards served here are visited", "`ERR invalid cursor`; `ERR syntax error`",
    ["FLUSHALL", "MSET {s}:1 a {s}:2 b", "HSET {s}:h f v", "SCAN 0 MATCH {s}:* COUNT 1000 TYPE string"])
cmd("FLUSHDB", "generic", "FLUSHDB [ASYNC|SYNC]", "`OK`; deletes every key served here",
    "`ERR syntax error`", ["SET doomed v", "FLUSHDB", "EXISTS doomed"])
cmd("FLUSHALL", "generic", "FLUSHALL [ASYNC|SYNC]", "as FLUSHDB", "`ERR syntax error`",
    ["FLUSHALL SYNC", "DBSIZE"])
cmd("SELECT", "generic", "SELECT index", "`OK` for 0, the only database in cluster mode",
    "`ERR SELECT is not allowed in cluster mode`", ["SELECT 0", "SELECT 1"])
cmd("READONLY", "generic", "READONLY", "`OK` (accepted for cluster clients)", "none",
    ["READONLY"])
cmd("READWRITE", "generic", "READWRITE", "`OK` (accepted for cluster clients)", "none",
    ["READWRITE"])
cmd("MULTI", "generic", "MULTI",
    "`OK`; the following commands answer `QUEUED` until EXEC or DISCARD",
    "`ERR MULTI calls can not be nested`",
    ["MULTI", "SET {m}:a 1", "INCR {m}:a", "EXEC", "MULTI", "MULTI", "DISCARD"])
cmd("EXEC", "generic", "EXEC",
    "the replies of the queued commands, run atomically; null when a WATCHed key changed",
    "`ERR EXEC without MULTI`; `EXECABORT Transaction discarded because of previous errors.` "
    "after a queued command was refused",
    ["MULTI", "SET {m}:a 1", "NOSUCHCOMMAND", "EXEC", "EXEC"])
cmd("DISCARD", "generic", "DISCARD", "`OK`; the queue is dropped", "`ERR DISCARD without MULTI`",
    ["MULTI", "SET {m}:a 2", "DISCARD", "DISCARD"])
cmd("WATCH", "generic", "WATCH key [key ...]",
    "`OK`; a later EXEC answers null if one of the keys changed in between",
    "`ERR WATCH inside MULTI is not allowed`; CROSSSLOT",
    ["WATCH {w}:balance", "MULTI", "WATCH {w}:balance", "INCRBY {w}:balance 10", "EXEC"])
cmd("UNWATCH", "generic", "UNWATCH", "`OK`; forgets the watched keys", "none",
    ["WATCH {w}:balance", "UNWATCH"])

# ---- buckets ----------------------------------------------------------------------------------
BUCKET_ERR = ("`NOSUCHBUCKET No such bucket: '<b>'`; `BUCKETBEINGREMOVED …`; `REJECT <shard> "
              "<host:port>` on a member that hosts none of the bucket's shards")
cmd("BUCKET.CREATE", "bucket", "BUCKET.CREATE bucket [SHARDS id [id ...]] [IF-NOT-EXISTS] [INDEXES schema]",
    "`OK`. Without SHARDS, one shard (round-robin among the shards this member is primary of); "
    "INDEXES takes an index schema whose indexes start READY",
    "`BUCKETALREADYEXISTS …`; `BUCKETBEINGREMOVED …`; `ERR No route found for Bucket shard: <n>`; "
    "`ERR … not supported` for COLLATION",
    ["BUCKET.CREATE users", "BUCKET.CREATE users", "BUCKET.CREATE users IF-NOT-EXISTS"])
cmd("BUCKET.LIST", "bucket", "BUCKET.LIST", "the bucket names of the session's namespace",
    "none but arity", ["BUCKET.CREATE users IF-NOT-EXISTS", "BUCKET.LIST"])
cmd("BUCKET.LOCATE", "bucket", "BUCKET.LOCATE bucket",
    "per shard: shard id, the primary's client address, the standbys' addresses", BUCKET_ERR,
    ["BUCKET.CREATE users IF-NOT-EXISTS", "BUCKET.LOCATE users"])
cmd("BUCKET.INSERT", "bucket", "BUCKET.INSERT bucket DOCS doc [doc ...]",
    "the documents' ids (24-hex ObjectIds by default). Documents are BSON or JSON (relaxed, with "
    "extended JSON); a missing `_id` is generated",
    BUCKET_ERR + "; `ERR BQL parse error: …` and other document errors; `ERR _id field must be "
    "of type ObjectId`; `DUPLICATEKEY Duplicate key: _id '<hex>'`",
    ["BUCKET.CREATE users IF-NOT-EXISTS",
     "BUCKET.INSERT users DOCS \"{_id: {$oid: '65f000000000000000000001'}, name: 'ada', age: 36}\" "
     "\"{_id: {$oid: '65f000000000000000000002'}, name: 'alan', age: 41}\"",
     "BUCKET.INSERT users DOCS \"{_id: {$oid: '65f000000000000000000001'}}\"",
     "BUCKET.INSERT users DOCS \"{name: \"",
     ])
QUERY_SETUP = ["BUCKET.CREATE people IF-NOT-EXISTS",
               "BUCKET.INSERT people DOCS \"{_id: {$oid: '65f100000000000000000001'}, name: 'ada', age: 36}\" "
               "\"{_id: {$oid: '65f100000000000000000002'}, name: 'alan', age: 41}\" "
               "\"{_id: {$oid: '65f100000000000000000003'}, name: 'grace', age: 85}\""]
cmd("BUCKET.QUERY", "bucket",
    "BUCKET.QUERY bucket filter [LIMIT n] [PROJECTION spec] [SORTBY field ASC|DESC] [RESULTSORT field ASC|DESC]",
    "`{cursor_id, entries}` in RESP3, `[cursor_id, [doc, …]]` in RESP2; documents as relaxed "
    "extended JSON (or BSON with `reply_type bson`). LIMIT 0 or none: the session's `limit`. "
    "Operators and semantics are in [buckets.md](buckets.md); BUCKET.ADVANCE returns the next "
    "batch",
    BUCKET_ERR + "; `ERR BQL parse error: …`; `ERR Unknown operator: <op>` and the other "
    "evaluation errors of reference 5.2",
    ["BUCKET.QUERY people \"{age: {$gte: 40}}\"",
     "BUCKET.QUERY people \"{}\" LIMIT 1 PROJECTION \"{name: 1, _id: 0}\"",
     "BUCKET.QUERY people \"{age: {$near: 1}}\""], setup=QUERY_SETUP)
cmd("QUERY", "bucket", "QUERY bucket filter [options]", "as BUCKET.QUERY", "as BUCKET.QUERY",
    ["QUERY people \"{name: 'grace'}\""], setup=QUERY_SETUP)
cmd("BUCKET.ADVANCE", "bucket", "BUCKET.ADVANCE QUERY|UPDATE|DELETE cursor-id",
    "the cursor's next batch, in the shape of the command that opened it; an empty batch at the "
    "end (a batch may also be short before the end: keep advancing until it is empty)",
    "`ERR No previous query context found for '<op>' operation with the given cursor id`",
    ["BUCKET.QUERY people \"{}\" LIMIT 2", "BUCKET.ADVANCE QUERY 1", "BUCKET.ADVANCE QUERY 1",
     "BUCKET.ADVANCE QUERY 42"], setup=QUERY_SETUP)
cmd("BUCKET.CLOSE", "bucket", "BUCKET.CLOSE QUERY|UPDATE|DELETE cursor-id", "`OK`",
    "`ERR no cursor found`",
    ["BUCKET.QUERY people \"{}\" LIMIT 1", "BUCKET.CLOSE QUERY 1", "BUCKET.CLOSE QUERY 1"],
    setup=QUERY_SETUP)
cmd("BUCKET.CURSORS", "bucket", "BUCKET.CURSORS [QUERY|UPDATE|DELETE]",
    "map of kind → map of cursor id → the cursor's filter. A session keeps at most 1,024 open "
    "cursors; opening one more drops the oldest", "`ERR Invalid operation kind: <v>`",
    ["BUCKET.QUERY people \"{age: {$lt: 50}}\" LIMIT 1", "BUCKET.CURSORS"], setup=QUERY_SETUP)
cmd("BUCKET.UPDATE", "bucket", "BUCKET.UPDATE bucket filter update [LIMIT n] [SORTBY _id ASC|DESC]",
    "`{cursor_id, object_ids}` of the documents that changed (a flat array in RESP2). Update "
    "keys: `$set`, `$unset`, `array_filters`, `upsert`; positional `$` and `$[ident]`",
    BUCKET_ERR + "; `ERR BQL parse error: …`; `ERR _id field is immutable` and the other update "
    "errors of reference 5.5",
    ["BUCKET.UPDATE people \"{name: 'alan'}\" \"{$set: {age: 42}}\"",
     "BUCKET.QUERY people \"{name: 'alan'}\"",
     "BUCKET.UPDATE people \"{}\" \"{$set: {_id: 1}}\""], setup=QUERY_SETUP)
cmd("BUCKET.DELETE", "bucket", "BUCKET.DELETE bucket filter [LIMIT n]",
    "`{cursor_id, object_ids}` of the deleted documents", BUCKET_ERR + "; `ERR BQL parse error: …`",
    ["BUCKET.CREATE scratch IF-NOT-EXISTS", "BUCKET.INSERT scratch DOCS "
     "\"{_id: {$oid: '65f200000000000000000001'}, n: 1}\" \"{_id: {$oid: '65f200000000000000000002'}, n: 2}\"",
     "BUCKET.DELETE scratch \"{n: {$gt: 1}}\"", "BUCKET.QUERY scratch \"{}\""])
cmd("BUCKET.REMOVE", "bucket", "BUCKET.REMOVE bucket",
    "`OK`; the bucket answers `BUCKETBEINGREMOVED` until BUCKET.PURGE", "`NOSUCHBUCKET …`",
    ["BUCKET.CREATE old-logs IF-NOT-EXISTS", "BUCKET.REMOVE old-logs",
     "BUCKET.QUERY old-logs \"{}\""])
cmd("BUCKET.PURGE", "bucket", "BUCKET.PURGE bucket",
    "`OK`; deletes the documents and metadata in transactions of 1,000 documents",
    "`ERR Bucket '<b>' is not removed`; `NOSUCHBUCKET …`",
    ["BUCKET.CREATE tmp-bucket IF-NOT-EXISTS", "BUCKET.PURGE tmp-bucket",
     "BUCKET.REMOVE tmp-bucket", "BUCKET.PURGE tmp-bucket", "BUCKET.LIST"])
cmd("BUCKET.INDEX", "bucket", ["BUCKET.INDEX CREATE bucket schema", "BUCKET.INDEX LIST bucket",
                               "BUCKET.INDEX DESCRIBE bucket index", "BUCKET.INDEX DROP bucket index",
                               "BUCKET.INDEX TASKS bucket index", "BUCKET.INDEX ANALYZE bucket index"],
    "CREATE, DROP: `OK` (a new index is built in the background: BUILDING, then READY; a "
    "dropped one is gone from queries and writes at once and its entries are cleared in the "
    "background). LIST: "
    "names, `primary-index` first. DESCRIBE: map of `index_type`, `id`, `selector`, `bson_type` "
    "(or `fields`), `status`, `unique`, `multi_key`, `collation`, `statistics`. TASKS: map "
    "`build-<id>` → `{kind, cursor, status, error}`, or `drop-<id>` → `{kind: DROP, status, "
    "error}` while a dropped index is cleared. ANALYZE answers not supported",
    "`ERR Unknown BSON type: <t>`; `ERR Invalid index schema: unknown option '<k>' for …` "
    "(a misspelt option is refused, not ignored); `ERR A unique index cannot be multi-key`; `ERR Compound index "
    "requires at least 2 fields`; `ERR An index on field '<f>' already exists`; `ERR An index "
    "named '<n>' already exists`; `NOSUCHINDEX No such index: '<x>'`; `ERR Cannot drop the "
    "primary index`; `ERR Index '<x>' is already dropped and its status cannot be modified.` "
    "(while its entries are cleared)",
    ["BUCKET.INDEX CREATE people \"{age: {bson_type: 'int32'}}\"",
     "BUCKET.INDEX CREATE people \"{name: {bson_type: 'string', uniqe: true}}\"",
     "BUCKET.INDEX LIST people",
     "BUCKET.INDEX DESCRIBE people selector:age.bsonType:INT32", "BUCKET.INDEX DROP people primary-index",
     "BUCKET.INDEX DESCRIBE people nosuch"], setup=QUERY_SETUP)
cmd("BUCKET.EXPLAIN", "bucket", "BUCKET.EXPLAIN bucket filter [SORTBY field ASC|DESC] [LIMIT n]",
    "`{is_cached, plan}`: the plan tree the query would run (reference 4.6.7's node maps)",
    BUCKET_ERR + "; `ERR BQL parse error: …`",
    ["BUCKET.EXPLAIN people \"{age: {$gt: 40}}\""], setup=QUERY_SETUP)

# ---- volumes ----------------------------------------------------------------------------------
cmd("VOLUME.ADMIN", "volume", [
    "VOLUME.ADMIN LIST", "VOLUME.ADMIN DESCRIBE volume",
    "VOLUME.ADMIN SET-STATUS volume READWRITE|READONLY|INOPERABLE",
    "VOLUME.ADMIN LIST-SEGMENTS volume",
    "VOLUME.ADMIN VACUUM START volume threshold | STOP volume | DROP volume | STATUS volume",
    "VOLUME.ADMIN CLEANUP-ORPHAN-FILES volume", "VOLUME.ADMIN PRUNE-CHANGELOG volume hours",
    "VOLUME.ADMIN REPLICATION START|STOP volume", "VOLUME.ADMIN MARK-STALE-PREFIXES …"],
    "LIST, LIST-SEGMENTS: names and ids; DESCRIBE, VACUUM STATUS: maps; the rest `OK`, or the "
    "deleted paths for CLEANUP-ORPHAN-FILES. Details in [volumes.md](volumes.md)",
    "`ERR Volume: '<name>' is not open`; `ERR invalid volume name: <name>`; `ERR invalid number of "
    "parameters`; `ERR Invalid volume status: <v>`; the VACUUM and REPLICATION errors of "
    "[volumes.md](volumes.md) and [cluster.md](cluster.md#replication); MARK-STALE-PREFIXES "
    "answers not supported",
    ["admin> VOLUME.ADMIN LIST", "admin> VOLUME.ADMIN LIST-SEGMENTS bucket-shard-0",
     "admin> VOLUME.ADMIN VACUUM STATUS bucket-shard-0",
     "admin> VOLUME.ADMIN SET-STATUS bucket-shard-0 BROKEN",
     "admin> VOLUME.ADMIN REPLICATION START bucket-shard-0"])
cmd("VOLUME.INSPECT", "volume", ["VOLUME.INSPECT CURSOR volume",
                                 "VOLUME.INSPECT ENTRY volume segment position length",
                                 "VOLUME.INSPECT REPLICATION volume"],
    "CURSOR: map of `active_segment_id`, `versionstamp`, `next_position`, `sequence_number`. "
    "ENTRY: the verified bytes of one entry (members read each other's document bodies with it). "
    "REPLICATION: the replication state, per segment",
    "`ERR Volume: '<name>' is not open`; `ERR invalid volume name: <name>`; an entry whose checksum "
    "does not match: `ERR … checksum …`",
    ["admin> VOLUME.INSPECT CURSOR bucket-shard-0", "admin> VOLUME.INSPECT REPLICATION bucket-shard-0"])
cmd("VOLUME.STATS", "volume", "VOLUME.STATS volume [OPCOUNTERS|SEGMENTS|REPLICATION|RESET]",
    "a map of sizes and fill (`status`, `segment_count`, `total_size_bytes`, `used_bytes`, "
    "`free_bytes`, `garbage_bytes`, `garbage_percentage`, `fill_ratio`, `total_cardinality`); "
    "OPCOUNTERS the operation counters; SEGMENTS one map per segment; REPLICATION the replication "
    "state; RESET `OK`, zeroing the counters",
    "`ERR Volume: '<name>' is not open`; `ERR invalid volume name: <name>`",
    ["admin> VOLUME.STATS bucket-shard-0", "admin> VOLUME.STATS bucket-shard-0 OPCOUNTERS",
     "admin> VOLUME.STATS bucket-shard-99", "admin> VOLUME.STATS nosuch-shard-0"])
cmd("SEGMENT.RANGE", "volume", "SEGMENT.RANGE volume segment position length [position length ...]",
    "one bulk string of raw bytes per range; only durable (written and synced) bytes are served. "
    "Standbys copy segments with it", "`ERR Segment … has no durable bytes at …`; `ERR Wrong number "
    "of parameters`; `ERR Volume: '<name>' is not open`",
    ["admin> SEGMENT.RANGE bucket-shard-0 1 0 8", "admin> SEGMENT.RANGE bucket-shard-0 1 0 8 16"])
cmd("SEGMENT.TAILPOINTER", "volume", "SEGMENT.TAILPOINTER volume segment",
    "`[durable watermark, replication version]`", "`ERR Volume: '<name>' is not open`",
    ["admin> SEGMENT.TAILPOINTER bucket-shard-0 1"])
cmd("REPLICATION.FOLLOW", "volume",
    "REPLICATION.FOLLOW volume member segment position version wait-ms",
    "`[version, segment, size, watermark, complete, …]` (four integers per segment) once the "
    "volume's replication version moved past `version`, or after `wait-ms`; internal: the standby's acknowledgement \"I hold every durable byte before "
    "(segment, position)\" and its long poll", "`ERR Volume: '<name>' is not open`; " + NOT_INT,
    ["admin> REPLICATION.FOLLOW bucket-shard-0 {member} 1 0 0 10"])
for name, syn in [("CHANGELOG.WATCH", "CHANGELOG.WATCH volume sequence"),
                  ("CHANGELOG.RANGE", "CHANGELOG.RANGE volume start end [options]"),
                  ("SEGMENT.INSERT", "SEGMENT.INSERT volume segment position bytes [...]")]:
    cmd(name, "volume", syn,
        "not served: the original's standbys follow the changelog and replay bytes; ours follow "
        "durable watermarks ([cluster.md](cluster.md#replication))",
        "`ERR … is not supported yet`", [f"admin> {syn.split()[0]} bucket-shard-0 1" + ("" if name == "CHANGELOG.WATCH" else " 2 3")])


def raw(line, reply):
    """redis-cli prints these text replies as they are, not quoted (its `output_raw` cases)."""
    words = [w.upper() for w in line.split()[:2]]
    if isinstance(reply, bytes) and (words[:1] == ["INFO"] or words in (
            ["CLUSTER", "NODES"], ["CLUSTER", "INFO"], ["CLIENT", "LIST"], ["CLIENT", "INFO"])):
        return reply.decode(errors="replace").replace("\r\n", "\n").rstrip("\n")
    return None


def sentence(text):
    """Ends a hand-written description with one full stop."""
    return text if text.endswith((".", ".`")) else text + "."


def ports_from_source(root):
    """Reads the ports of the commands declared with `spec!` in server/src/commands/mod.rs; the
    table's other constructors (`data_spec`, `redis_spec`, `ns_spec`) are client-only."""
    text = open(os.path.join(root, "server/src/commands/mod.rs")).read()
    out = {}
    for m in re.finditer(r'spec!\(\s*"([A-Z0-9.\-]+)",\s*"([a-z0-9.|\-]+)",[^;]*?Ports::(\w+)', text):
        if "|" not in m.group(2):
            out[m.group(1)] = {"Both": "client and admin", "ClientOnly": "client",
                               "AdminOnly": "admin"}[m.group(3)]
    return out


def start_server(binary, tmp):
    cmd_line = [binary, "--port", "0", "--admin-port", "0", "--data-dir", os.path.join(tmp, "data"),
                "--bootstrap", "--log-format", "json", "--set", "server.enable_debug_command=true"]
    proc = subprocess.Popen(cmd_line, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    ports = {}
    deadline = time.time() + 60
    while len(ports) < 2 and time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r'"message":"listening".*?"kind":"(client|admin)","addr":"[^"]*:(\d+)"', line)
        if m:
            ports[m.group(1)] = int(m.group(2))
    if len(ports) < 2:
        proc.kill()
        sys.exit("the server did not report its ports")
    return proc, ports


def run(conns, line, member):
    port = "client"
    if line.startswith("admin> "):
        port, line = "admin", line[len("admin> "):]
    line = line.replace("{member}", member)
    # As redis-cli does, "\xHH" inside an argument is the byte HH.
    args = [re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]), arg.encode())
            for arg in shlex.split(line)]
    for attempt in range(100):
        reply = conns[port].call(args)
        # Right after --bootstrap the routes may still be loading.
        if isinstance(reply, Error) and any(
                text in reply for text in ("No route found", "not been initialized", "not usable yet")):
            time.sleep(0.1)
            continue
        break
    return port, line, reply


def main():
    binary = sys.argv[1]
    root = os.path.join(os.path.dirname(__file__), "../..")
    ports = ports_from_source(root)
    with tempfile.TemporaryDirectory() as tmp:
        proc, listen = start_server(binary, tmp)
        try:
            emit(ports, listen)
        finally:
            proc.kill()


def emit(declared, listen):
    client = Conn(listen["client"])
    member = client.call(["CLUSTER", "MYID"]).decode()
    # The names come from the server itself, so a command the table gains is noticed here.
    names = [c[0].decode().upper() for c in client.call(["COMMAND"])]
    ports = {n: declared.get(n, "client") for n in names}
    out = []
    w = out.append
    w("# Command reference\n")
    w("Every command Kronotop serves, by group: its syntax, its reply, its errors, and an "
      "example. The examples are real: `docs/tools/command_reference.py` ran them against a fresh "
      "single-member server (`kronotop --bootstrap`, RESP2, `server.enable_debug_command = true`) "
      "and wrote down what it answered, as `redis-cli` prints it. Prompts show the default ports: "
      "5484 is the client port, 3320 the admin port.\n")
    w("Errors every command can give are not repeated below. The server checks, in this order: "
      "an unknown command (`ERR unknown command '<x>'`), the argument "
      "count (`ERR wrong number of arguments for '<x>' command`), the port (`ERR command '<x>' is "
      "served on the client port only`, or the admin port), an uninitialised cluster (`ERR cluster "
      "has not been initialized yet`) and authentication (`NOAUTH Authentication required.`). "
      "Metadata-store failures keep their code (`NOT_COMMITTED …`, `TRANSACTION_TOO_OLD …`). "
      "Semantics beyond one command are in the topic pages: [redis.md](redis.md), "
      "[zmap.md](zmap.md), [buckets.md](buckets.md), [cluster.md](cluster.md), "
      "[volumes.md](volumes.md); [commands.md](commands.md) is the one-page summary.\n")
    for group, title in GROUPS:
        names = [e["name"] for e in ENTRIES if e["group"] == group]
        w(f"- [{title}](#{title.lower().replace(' ', '-')}): " + ", ".join(f"`{n}`" for n in names))
    w("")
    for group, title in GROUPS:
        w(f"## {title}\n")
        for e in [e for e in ENTRIES if e["group"] == group]:
            name = e["name"]
            if name not in ports:
                sys.exit(f"{name} is not in the command table")
            w(f"### {name}\n")
            w("**Syntax**\n")
            w("```\n" + "\n".join(e["syntax"]) + "\n```\n")
            w(f"**Port**: {ports[name]}.\n")
            w(f"**Reply**: {sentence(e['reply'])}\n")
            w(f"**Errors**: {sentence(e['errors'])}\n")
            conns = {"client": Conn(listen["client"]), "admin": Conn(listen["admin"])}
            for line in e["setup"]:
                run(conns, line, member)
            w("**Example**\n")
            w("```console")
            for line in e["example"]:
                port, shown, reply = run(conns, line, member)
                w(f"{SHOWN[port]}> {shown}")
                text = raw(shown, reply) or fmt(reply)
                # The server listened on free ports; the page shows the default ones.
                for kind, shown in (("client", "5484"), ("admin", "3320")):
                    text = re.sub(rf"(?<![0-9]){listen[kind]}(?![0-9])", shown, text)
                text = text.split("\n")
                if len(text) > MAX_LINES:
                    text = text[:MAX_LINES] + [f"… ({len(text) - MAX_LINES} more lines)"]
                w("\n".join(text))
            w("```\n")
    missing = set(ports) - {e["name"] for e in ENTRIES}
    if missing:
        sys.exit(f"commands without a section: {sorted(missing)}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
