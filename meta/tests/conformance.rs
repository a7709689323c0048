//! The conformance suite against the embedded backend, and against FoundationDB where
//! `FDB_CLUSTER_FILE` names a cluster (and the crate is built with `--features fdb`).

#![allow(clippy::unwrap_used)]

mod embedded {
    use std::sync::Arc;

    use kronotop_meta::clock::ManualClock;
    use kronotop_meta::conformance::Harness;
    use kronotop_meta::{Database, embedded};

    /// A fresh database in a temporary directory that lives as long as the process.
    async fn open(case: &str) -> Option<Harness> {
        let dir = tempfile::tempdir().unwrap().keep();
        let clock = Arc::new(ManualClock::default());
        let options = embedded::Options { clock: clock.clone(), ..embedded::Options::default() };
        let db = Database::open_embedded(&dir, options).unwrap();
        Some(Harness::new(db, format!("{case}/").as_bytes(), Some(clock)).await)
    }

    kronotop_meta::conformance_suite!(open);
}

#[cfg(feature = "fdb")]
mod foundationdb {
    use kronotop_meta::Database;
    use kronotop_meta::conformance::Harness;

    async fn open(case: &str) -> Option<Harness> {
        let Ok(cluster_file) = std::env::var("FDB_CLUSTER_FILE") else {
            eprintln!("skipped {case} on FoundationDB: FDB_CLUSTER_FILE is not set");
            return None;
        };
        let db = Database::open_foundationdb(Some(&cluster_file)).unwrap();
        Some(Harness::new(db, format!("kronotop-conformance/{case}/").as_bytes(), None).await)
    }

    kronotop_meta::conformance_suite!(open);
}

/// Watch accounting is the backend's own (FoundationDB's limit is 10,000 per client): checked on
/// the embedded backend with a small limit.
mod embedded_watch_limit {
    use std::time::Duration;

    use kronotop_meta::{Database, MetaError, embedded};

    #[tokio::test]
    async fn too_many_watches_and_dropped_watches_free_their_slot() {
        let dir = tempfile::tempdir().unwrap();
        let options = embedded::Options { max_watches: 2, ..embedded::Options::default() };
        let db = Database::open_embedded(dir.path(), options).unwrap();
        let tx = db.create_trx().unwrap();
        let a = tx.watch(b"a");
        let b = tx.watch(b"b");
        let mut c = tx.watch(b"c");
        tx.commit().await.unwrap();
        let third = tokio::time::timeout(Duration::from_secs(5), &mut c).await.unwrap();
        assert_eq!(third, Err(MetaError::TOO_MANY_WATCHES));
        drop(a);
        drop(b);
        let tx = db.create_trx().unwrap();
        let mut d = tx.watch(b"d");
        tx.commit().await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut d).await.is_err(),
            "registered"
        );
        let w = db.create_trx().unwrap();
        w.set(b"d", b"1");
        w.commit().await.unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), d).await.unwrap(), Ok(()));
    }
}
