//! Buckets on a real Volume and embedded metadata store: insert, duplicate ids, `_id` order scans.

#![allow(clippy::unwrap_used)]

use bson::{Bson, doc, oid::ObjectId};
use kronotop_bucket::{BucketError, Buckets};
use kronotop_meta::tuple::Subspace;
use kronotop_meta::{Database, embedded};
use kronotop_volume::{Volume, VolumeConfig};

/// A metadata store, a Volume and a namespace's buckets in a fresh directory (returned too: the
/// files go when it is dropped).
async fn open() -> (tempfile::TempDir, Database, Volume, Buckets) {
    let dir = tempfile::tempdir().unwrap();
    let db =
        Database::open_embedded(&dir.path().join("meta"), embedded::Options::default()).unwrap();
    let volume = Volume::open(
        &db,
        "bucket-shard-0",
        &dir.path().join("vol"),
        Subspace::from_bytes(b"vol/".to_vec()),
        VolumeConfig::default(),
    )
    .await
    .unwrap();
    (dir, db, volume, Buckets::new(Subspace::from_bytes(b"ns/".to_vec())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_scan_and_read_back() {
    let (_dir, db, volume, buckets) = open().await;
    let tx = db.create_trx().unwrap();
    assert!(buckets.create(&tx, "users", &[0], false).await.unwrap());
    assert!(!buckets.create(&tx, "users", &[0], true).await.unwrap());
    assert!(matches!(
        buckets.create(&tx, "users", &[0], false).await,
        Err(BucketError::AlreadyExists(_))
    ));
    tx.commit().await.unwrap();

    let given = ObjectId::new();
    let tx = db.create_trx().unwrap();
    let meta = buckets.get(&tx, "users").await.unwrap();
    let ids = buckets
        .insert(
            &db,
            &tx,
            &meta,
            0,
            &volume,
            vec![doc! {"name": "ada"}, doc! {"_id": given, "n": 2}],
        )
        .await
        .unwrap();
    assert_eq!(ids[1], given);
    tx.commit().await.unwrap();

    let tx = db.create_trx().unwrap();
    assert!(matches!(
        buckets.insert(&db, &tx, &meta, 0, &volume, vec![doc! {"_id": given}]).await,
        Err(BucketError::DuplicateKey(_))
    ));
    assert!(matches!(
        buckets.insert(&db, &tx, &meta, 0, &volume, vec![doc! {"_id": 5}]).await,
        Err(BucketError::IdNotObjectId)
    ));
    assert!(matches!(buckets.get(&tx, "nope").await, Err(BucketError::NoSuchBucket(_))));
    assert_eq!(buckets.list(&tx).await.unwrap(), ["users"]);

    let all = buckets.scan(&tx, &meta, None, 100, false).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[0].id < all[1].id, "scans go in _id order");
    let first = buckets.read(&volume, &all[0]).unwrap();
    assert_eq!(first.get("_id"), Some(&Bson::ObjectId(all[0].id)));
    assert_eq!(first.keys().next().map(String::as_str), Some("_id"), "_id comes first");
    let rest = buckets.scan(&tx, &meta, Some(&all[0].id), 100, false).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, all[1].id);
    let back = buckets.scan(&tx, &meta, None, 100, true).await.unwrap();
    assert_eq!(back.iter().map(|l| l.id).collect::<Vec<_>>(), [all[1].id, all[0].id]);
    let back = buckets.scan(&tx, &meta, Some(&all[1].id), 100, true).await.unwrap();
    assert_eq!(back.iter().map(|l| l.id).collect::<Vec<_>>(), [all[0].id]);
}

/// A dropped index disappears from the bucket at once, while its entries are cleared in steps;
/// dropping it again meanwhile says it is already dropped, and once cleared it is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_index_entries_are_cleared_in_steps() {
    let (_dir, db, volume, buckets) = open().await;
    let tx = db.create_trx().unwrap();
    buckets.create(&tx, "users", &[0], false).await.unwrap();
    let defs = kronotop_bucket::index::parse_schema(&doc! {"age": {"bson_type": "int32"}}).unwrap();
    let created = buckets.create_indexes(&tx, "users", defs).await.unwrap();
    let (name, id) = (created[0].0.name.clone(), created[0].0.id);
    tx.commit().await.unwrap();
    for chunk in 0..5 {
        let tx = db.create_trx().unwrap();
        let meta = buckets.get(&tx, "users").await.unwrap();
        let docs = (0..500).map(|i| doc! {"age": chunk * 500 + i}).collect();
        buckets.insert(&db, &tx, &meta, 0, &volume, docs).await.unwrap();
        tx.commit().await.unwrap();
    }
    let entries = |tx: kronotop_meta::Transaction| {
        let (b, e) = Subspace::from_bytes(buckets.secondary_prefix("users", id)).range();
        async move {
            tx.get_range(&kronotop_meta::RangeOption::new(b, e).limit(100_000), true)
                .await
                .unwrap()
                .kvs
                .len()
        }
    };
    assert_eq!(entries(db.create_trx().unwrap()).await, 2500);

    let tx = db.create_trx().unwrap();
    assert_eq!(buckets.drop_index(&tx, "users", &name).await.unwrap(), id);
    tx.commit().await.unwrap();
    let tx = db.create_trx().unwrap();
    let meta = buckets.get(&tx, "users").await.unwrap();
    assert!(meta.indexes.is_empty());
    assert_eq!(meta.dropped.len(), 1);
    assert_eq!(entries(db.create_trx().unwrap()).await, 2500, "entries go in the background");
    let again = buckets.drop_index(&tx, "users", &name).await.unwrap_err();
    assert_eq!(
        again.to_string(),
        format!("Index '{name}' is already dropped and its status cannot be modified.")
    );
    // A write after the drop maintains the index no more.
    let docs = vec![doc! {"age": 7}];
    buckets.insert(&db, &tx, &meta, 0, &volume, docs).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(entries(db.create_trx().unwrap()).await, 2500);

    let mut steps = 0;
    loop {
        let tx = db.create_trx().unwrap();
        let done = buckets.clear_dropped(&tx, "users", id, 1000).await.unwrap();
        tx.commit().await.unwrap();
        steps += 1;
        if done {
            break;
        }
        let left = entries(db.create_trx().unwrap()).await;
        assert_eq!(left, 2500usize.saturating_sub(1000 * steps), "step {steps}");
    }
    // Three steps of 1,000 clear 2,500 entries; the fourth finds none and forgets the index.
    assert_eq!(steps, 4);
    assert_eq!(entries(db.create_trx().unwrap()).await, 0);
    let tx = db.create_trx().unwrap();
    assert!(buckets.get(&tx, "users").await.unwrap().dropped.is_empty());
    assert!(matches!(
        buckets.drop_index(&tx, "users", &name).await,
        Err(BucketError::NoSuchIndex(_))
    ));
}

/// What vacuum asks of a bucket: a body is referred to only while its document's primary entry
/// points at it (not once replaced, not once the bucket is purged), and repointing checks that
/// the entry points at the moving body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_referred_to_while_the_primary_entry_points_at_them() {
    let (_dir, db, volume, buckets) = open().await;
    let tx = db.create_trx().unwrap();
    assert!(buckets.create(&tx, "r", &[0], false).await.unwrap());
    tx.commit().await.unwrap();
    let tx = db.create_trx().unwrap();
    let meta = buckets.get(&tx, "r").await.unwrap();
    buckets.insert(&db, &tx, &meta, 0, &volume, vec![doc! {"n": 1}]).await.unwrap();
    tx.commit().await.unwrap();

    let tx = db.create_trx().unwrap();
    let first = buckets.scan(&tx, &meta, None, 10, false).await.unwrap().remove(0);
    let first_bytes = volume.read(&first.body).unwrap();
    assert!(buckets.refers_to(&tx, "r", 0, &first_bytes, &first.body).await.unwrap());
    assert!(!buckets.refers_to(&tx, "r", 1, &first_bytes, &first.body).await.unwrap());
    let old = buckets.read(&volume, &first).unwrap();
    let new = doc! {"_id": first.id, "n": 2};
    buckets.replace(&db, &tx, &meta, &volume, &first, (&old, &new)).await.unwrap();
    tx.commit().await.unwrap();

    let tx = db.create_trx().unwrap();
    let second = buckets.scan(&tx, &meta, None, 10, false).await.unwrap().remove(0);
    let second_bytes = volume.read(&second.body).unwrap();
    assert!(!buckets.refers_to(&tx, "r", 0, &first_bytes, &first.body).await.unwrap());
    assert!(buckets.refers_to(&tx, "r", 0, &second_bytes, &second.body).await.unwrap());
    assert!(matches!(
        buckets.repoint(&tx, "r", 0, &first_bytes, &first.body, &second.body).await,
        Err(BucketError::BadMetadata(_))
    ));
    assert!(matches!(
        buckets.refers_to(&tx, "r", 0, b"not a document", &second.body).await,
        Err(BucketError::BadMetadata(_))
    ));
    drop(tx);

    let tx = db.create_trx().unwrap();
    buckets.remove(&tx, "r").await.unwrap();
    tx.commit().await.unwrap();
    let tx = db.create_trx().unwrap();
    assert!(buckets.refers_to(&tx, "r", 0, &second_bytes, &second.body).await.unwrap());
    let hosted = |_: u32| None;
    assert!(buckets.purge_step(&tx, "r", &hosted, 10).await.unwrap());
    tx.commit().await.unwrap();
    let tx = db.create_trx().unwrap();
    assert!(!buckets.refers_to(&tx, "r", 0, &second_bytes, &second.body).await.unwrap());
}

/// Inside `Database::run`, a conflict stays a metadata error however deep a bucket error wraps it
/// (so the run retries it), and other errors stay the caller's, text intact.
#[test]
fn bucket_errors_keep_their_metadata_code_inside_run() {
    use kronotop_meta::{MetaError, RunError};
    use kronotop_volume::VolumeError;
    let direct = RunError::from(BucketError::Meta(MetaError::NOT_COMMITTED));
    assert_eq!(direct.meta(), Some(MetaError::NOT_COMMITTED));
    let nested = RunError::from(BucketError::Volume(VolumeError::Meta(MetaError::NOT_COMMITTED)));
    assert_eq!(nested.meta(), Some(MetaError::NOT_COMMITTED));
    let volume = RunError::from(VolumeError::Meta(MetaError::NOT_COMMITTED));
    assert_eq!(volume.meta(), Some(MetaError::NOT_COMMITTED));
    // What a plain boxing gave before: the code is hidden behind the transparent variant.
    let boxed = RunError::Custom(Box::new(BucketError::Meta(MetaError::NOT_COMMITTED)));
    assert_eq!(boxed.meta(), None);
    let other = RunError::from(BucketError::NoSuchBucket("b".into()));
    assert_eq!(other.meta(), None);
    assert_eq!(other.to_string(), "No such bucket: 'b'");
}
