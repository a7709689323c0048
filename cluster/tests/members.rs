//! Several members on one embedded metadata store: failure detection and role-change events.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kronotop_cluster::{
    Cluster, ClusterConfig, ClusterEvent, MemberRecord, MemberStatus, RouteOp, RouteRole,
    ShardKind, Shards,
};
use kronotop_meta::{Database, embedded};

fn config() -> ClusterConfig {
    ClusterConfig {
        name: "test".into(),
        redis_shards: 2,
        bucket_shards: 2,
        heartbeat_interval: Duration::from_millis(100),
        // Long enough that a busy test machine does not make live members look silent.
        max_silent_period: Duration::from_millis(1000),
        force_initialization: false,
        default_namespace: "global".into(),
    }
}

fn record(n: u8) -> MemberRecord {
    MemberRecord {
        // Distinct in their first four characters, so prefixes name them.
        id: format!("{:04x}{}", 0xa000 + u32::from(n), "0".repeat(36)),
        status: MemberStatus::Running,
        external_host: "127.0.0.1".into(),
        external_port: 5484 + u16::from(n),
        internal_host: "127.0.0.1".into(),
        internal_port: 3320 + u16::from(n),
        process_id: String::new(),
    }
}

async fn start(db: &Database, n: u8) -> Arc<Cluster> {
    Cluster::start(db.clone(), config(), record(n)).await.unwrap()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_is_suspected_and_forgiven_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_embedded(dir.path(), embedded::Options::default()).unwrap();
    let a = start(&db, 0).await;
    let b = start(&db, 1).await;
    let c = start(&db, 2).await;
    a.initialize().await.unwrap();
    let b_id = b.me().id;
    // All heartbeat: nobody is silent.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(a.silent_members().is_empty());
    // b "crashes": its heartbeat stops but its record still says RUNNING.
    b.halt();
    eventually("a suspects b", async || a.silent_members() == vec![b_id.clone()]).await;
    eventually("c suspects b", async || c.silent_members() == vec![b_id.clone()]).await;
    assert!(!b.silent_members().contains(&b.me().id), "never itself");
    // b comes back (same id, the registry says RUNNING but it has been silent: it takes over).
    let b2 = Cluster::start(db.clone(), config(), record(1)).await.unwrap();
    assert_eq!(b2.me().id, b_id);
    eventually("a forgives b", async || a.silent_members().is_empty()).await;
    // A member that stops cleanly is STOPPED, not silent.
    c.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(a.silent_members().is_empty());
    let statuses: Vec<(String, MemberStatus)> = a
        .list_members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.record.id, m.record.status))
        .collect();
    assert!(statuses.contains(&(c.me().id, MemberStatus::Stopped)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_reach_the_member_concerned() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_embedded(dir.path(), embedded::Options::default()).unwrap();
    let a = start(&db, 0).await;
    let b = start(&db, 1).await;
    let mut b_events = b.subscribe();
    a.initialize().await.unwrap();
    let next = async |rx: &mut tokio::sync::broadcast::Receiver<ClusterEvent>| {
        tokio::time::timeout(Duration::from_secs(2), rx.recv()).await.unwrap().unwrap()
    };
    assert_eq!(next(&mut b_events).await, ClusterEvent::Initialized);
    let b_id = b.me().id;
    let a_id = a.me().id;
    a.route(RouteOp::Set, RouteRole::Primary, ShardKind::Bucket, Shards::One(1), &b_id)
        .await
        .unwrap();
    assert_eq!(
        next(&mut b_events).await,
        ClusterEvent::BecamePrimary { kind: ShardKind::Bucket, shard: 1 }
    );
    a.route(RouteOp::Set, RouteRole::Primary, ShardKind::Redis, Shards::One(0), &a_id)
        .await
        .unwrap();
    a.route(RouteOp::Set, RouteRole::Standby, ShardKind::Redis, Shards::One(0), &b_id[..4])
        .await
        .unwrap();
    assert_eq!(
        next(&mut b_events).await,
        ClusterEvent::BecameStandby { kind: ShardKind::Redis, shard: 0 }
    );
    // Failover by hand: the shard must not be READWRITE, then the standby becomes primary.
    a.set_shard_status(ShardKind::Redis, Shards::One(0), "READONLY").await.unwrap();
    a.route(RouteOp::Set, RouteRole::Primary, ShardKind::Redis, Shards::One(0), &b_id)
        .await
        .unwrap();
    let got = [next(&mut b_events).await, next(&mut b_events).await];
    assert!(
        got.contains(&ClusterEvent::BecamePrimary { kind: ShardKind::Redis, shard: 0 }),
        "{got:?}"
    );
    assert!(
        got.contains(&ClusterEvent::NoLongerStandby { kind: ShardKind::Redis, shard: 0 }),
        "{got:?}"
    );
    let route = b.topology().routes[&(ShardKind::Redis, 0)].clone();
    assert_eq!(route.primary.as_deref(), Some(b_id.as_str()));
    assert!(route.standbys.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_barriers_wait_for_every_live_member() {
    use kronotop_cluster::ClusterError;
    use kronotop_cluster::namespace::NamespaceError;

    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_embedded(dir.path(), embedded::Options::default()).unwrap();
    // Members are suspected only after a minute here, so a halted one holds barriers up.
    let slow = ClusterConfig { max_silent_period: Duration::from_secs(60), ..config() };
    let a = Cluster::start(db.clone(), slow.clone(), record(0)).await.unwrap();
    let b = Cluster::start(db.clone(), slow.clone(), record(1)).await.unwrap();
    a.initialize().await.unwrap();
    a.namespace_create("app.users").await.unwrap();
    a.namespace_create("app.orders").await.unwrap();

    // Both members are watching: a purge after a removal goes through.
    a.namespace_remove("app.users").await.unwrap();
    a.namespace_purge("app.users").await.unwrap();
    assert!(!a.namespace_exists("app.users").await.unwrap());

    // b stops watching (but is not suspected): the next purge cannot pass its barrier.
    b.halt();
    a.namespace_remove("app.orders").await.unwrap();
    let err = a.namespace_purge("app.orders").await.unwrap_err();
    assert!(matches!(err, ClusterError::Namespace(NamespaceError::Barrier(_))), "{err}");
    // Nor can a moved-away name be created again.
    a.namespace_move("app", "application").await.unwrap();
    let err = a.namespace_create("app").await.unwrap_err();
    assert!(matches!(err, ClusterError::Namespace(NamespaceError::Tombstone(_))), "{err}");

    // b comes back and catches up: both go through.
    let b2 =
        Cluster::start(db.clone(), ClusterConfig { force_initialization: true, ..slow }, record(1))
            .await
            .unwrap();
    eventually("b2 observes the namespace version", async || {
        a.namespace_create("app").await.is_ok()
    })
    .await;
    a.namespace_purge("application.orders").await.unwrap();
    assert_eq!(a.namespace_list(Some("application")).await.unwrap(), Vec::<String>::new());
    drop(b2);
}
