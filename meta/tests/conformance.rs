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
