"""redis-py's RedisCluster against a Kronotop cluster: discovers the slots with CLUSTER SLOTS from
one member, then writes and reads 10,000 keys, following MOVED redirects where its map is stale.

Usage: redis_cluster.py HOST:PORT (any member's client address).
"""
import sys

from redis.cluster import RedisCluster

host, port = sys.argv[1].rsplit(":", 1)
rc = RedisCluster(host=host, port=int(port), decode_responses=True)
nodes = {n.name for n in rc.get_nodes()}
assert len(nodes) == 3, nodes
pipe = rc.pipeline()
for i in range(10000):
    pipe.set(f"key:{i}", f"value:{i}")
assert all(pipe.execute())
for i in range(0, 10000, 1):
    v = rc.get(f"key:{i}")
    assert v == f"value:{i}", (i, v)
assert rc.hset("user:{42}", mapping={"name": "ada"}) == 1
assert rc.hgetall("user:{42}") == {"name": "ada"}
assert rc.delete("user:{42}") == 1
print("RedisCluster: 10000 keys written and read back")
