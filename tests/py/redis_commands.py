"""redis-py 5 against one Kronotop member, over RESP2 and RESP3.

Usage: redis_commands.py HOST:PORT. Exits non-zero at the first check that fails.
"""
import sys
import time

import redis

host, port = sys.argv[1].rsplit(":", 1)


def check(protocol):
    r = redis.Redis(host=host, port=int(port), protocol=protocol, decode_responses=True)
    r.flushall()
    assert r.ping()
    assert r.set("k", "v") is True
    assert r.get("k") == "v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("k", "w", xx=True, get=True) == "v"
    assert r.set("k", "x", ex=100) is True
    assert 99 <= r.ttl("k") <= 100
    assert r.set("k", "y", keepttl=True) is True
    assert r.ttl("k") > 90
    assert r.getex("k", persist=True) == "y"
    assert r.ttl("k") == -1
    assert r.setnx("k", "z") is False
    assert r.setex("e", 10, "v") is True
    assert r.psetex("p", 5000, "v") is True
    assert 0 < r.pttl("p") <= 5000
    assert r.mset({"{m}a": "1", "{m}b": "2"}) is True
    assert r.mget(["{m}a", "{m}b", "{m}c"]) == ["1", "2", None]
    assert r.msetnx({"{m}a": "9", "{m}c": "3"}) is False
    assert r.getset("{m}a", "5") == "1"
    assert r.getdel("{m}b") == "2"
    assert r.append("s", "ab") == 2
    assert r.strlen("s") == 2
    assert r.getrange("s", 0, -1) == "ab"
    assert r.setrange("s", 1, "XYZ") == 4
    assert r.get("s") == "aXYZ"
    assert r.incr("n") == 1
    assert r.incrby("n", 9) == 10
    assert r.decr("n") == 9
    assert r.decrby("n", 4) == 5
    assert r.incrbyfloat("f", 1.5) == 1.5
    try:
        r.incr("s")
        raise AssertionError("INCR of a non-number must fail")
    except redis.ResponseError as e:
        assert "not an integer" in str(e)
    assert r.hset("h", mapping={"a": "1", "b": "2"}) == 2
    assert r.hgetall("h") == {"a": "1", "b": "2"}
    assert r.hget("h", "a") == "1"
    assert sorted(r.hkeys("h")) == ["a", "b"]
    assert sorted(r.hvals("h")) == ["1", "2"]
    assert r.hlen("h") == 2
    assert r.hincrby("h", "a", 2) == 3
    assert r.hincrbyfloat("h", "b", 0.5) == 2.5
    assert r.hexists("h", "a") is True
    assert r.hstrlen("h", "a") == 1
    assert r.hsetnx("h", "a", "x") == 0
    assert r.hmget("h", ["a", "zz"]) == ["3", None]
    assert r.hrandfield("h") in ("a", "b")
    pairs = r.hrandfield("h", 2, withvalues=True)
    assert len(pairs) in (2, 4), pairs
    cursor, fields = r.hscan("h", 0)
    assert cursor == 0 and fields == {"a": "3", "b": "2.5"}, (cursor, fields)
    assert r.hdel("h", "a", "b") == 2
    assert r.exists("h") == 0
    try:
        r.hset("s", "f", "v")
        raise AssertionError("HSET on a string must fail")
    except redis.ResponseError as e:
        assert str(e).startswith("WRONGTYPE") or "wrong kind" in str(e), e
    assert r.expire("s", 100) is True
    assert r.expire("s", 10, gt=True) is False
    assert r.pexpire("s", 1000, lt=True) is True
    assert r.persist("s") is True
    assert r.type("s") == "string"
    # Multi-key commands need their keys in one slot, as in Redis Cluster.
    assert r.rename("s", "{s}") is True
    assert r.set("{s}c", "1") is True
    assert r.renamenx("{s}", "{s}c") is False
    assert r.delete("{s}", "{s}c", "{s}nope") == 2
    assert r.unlink("e") == 1
    assert r.touch("k") == 1
    assert r.expireat("k", int(time.time()) + 100) is True
    assert r.expiretime("k") == int(time.time()) + 100 or r.expiretime("k") == int(time.time()) + 99
    keys = set(r.scan_iter(count=3))
    assert keys == {"k", "{m}a", "p", "n", "f"}, keys
    assert set(r.scan_iter(match="{m}*")) == {"{m}a"}
    assert set(r.scan_iter(_type="string")) == keys
    assert r.dbsize() == 5
    assert r.randomkey() in keys
    info = r.info("keyspace")
    assert info["db0"]["keys"] == 5, info
    p = r.pipeline(transaction=True)
    p.set("{t}a", "1").incr("{t}a").get("{t}a")
    assert p.execute() == [True, 2, "2"]
    with r.pipeline() as pipe:
        pipe.watch("{t}a")
        r.set("{t}a", "changed")
        pipe.multi()
        pipe.set("{t}a", "mine")
        try:
            pipe.execute()
            raise AssertionError("EXEC after a watched change must abort")
        except redis.WatchError:
            pass
    assert r.get("{t}a") == "changed"
    assert r.flushdb() is True
    assert r.dbsize() == 0


def check_acl():
    """redis-py's ACL helpers against our ACL commands, and a restricted user's NOPERM."""
    r = redis.Redis(host=host, port=int(port), decode_responses=True)
    assert r.acl_setuser("eve", enabled=True, passwords=["+pw"], keys=["e:*"],
                         commands=["+get", "+set"]) is True
    user = r.acl_getuser("eve")
    assert user["enabled"] is True and user["keys"] == ["~e:*"], user
    assert user["commands"] == ["+get", "+set"], user
    assert "eve" in r.acl_users() and r.acl_whoami() == "default"
    assert any(line.startswith("user eve on #sha256$") for line in r.acl_list())
    assert "read" in r.acl_cat()
    eve = redis.Redis(host=host, port=int(port), username="eve", password="pw", decode_responses=True)
    assert eve.set("e:1", "x") is True and eve.get("e:1") == "x"
    try:
        eve.set("other", "x")
        raise AssertionError("a key outside ~e:* was written")
    except redis.exceptions.NoPermissionError:
        pass
    assert r.acl_deluser("eve") == 1
    r.delete("e:1")


for proto in (2, 3):
    check(proto)
check_acl()
print("redis-py: all checks passed for RESP2 and RESP3")
