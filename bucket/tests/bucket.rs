//! Buckets on a real Volume and embedded metadata store: insert, duplicate ids, `_id` order scans.

#![allow(clippy::unwrap_used)]

use bson::{Bson, doc, oid::ObjectId};
use kronotop_bucket::{BucketError, Buckets};
use kronotop_meta::tuple::Subspace;
use kronotop_meta::{Database, embedded};
use kronotop_volume::{Volume, VolumeConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_scan_and_read_back() {
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
    let buckets = Buckets::new(Subspace::from_bytes(b"ns/".to_vec()));
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
