//! The member's local directory and its id.
//!
//! A member lives in `<data_dir>/<cluster.name>/<member-id>/` (reference section 1.3). The cluster
//! directory holds zero or one entry: with none, a new id is made (40 lowercase hex characters from
//! 20 random bytes) and its directory created and synced; with one, its name is the id, reused on
//! every restart. A lock file inside stops a second process from running as the same member.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

/// Length of a member id in hex characters (a SHA-1's worth of bits, as the original's ids).
pub const MEMBER_ID_LEN: usize = 40;

/// Name of the lock file inside the member directory.
const LOCK_FILE: &str = "LOCK";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    #[error("cannot use data directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("Found more than one file or directory in {0}; it must hold exactly one member")]
    Ambiguous(PathBuf),
    #[error("{0} is not a member directory: its name must be 40 lowercase hex characters")]
    BadId(PathBuf),
    #[error("another kronotop process is running as member {id} from {path}")]
    Locked { id: String, path: PathBuf },
    #[error("no randomness available to create a member id: {0}")]
    Random(getrandom::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MemberError + '_ {
    move |source| MemberError::Io { path: path.to_owned(), source }
}

/// The opened member directory. Holding it holds the lock.
#[derive(Debug)]
pub struct MemberDir {
    pub id: String,
    pub path: PathBuf,
    /// Locked exclusively for as long as this value lives.
    _lock: File,
}

/// Whether `s` is a valid member id.
pub fn is_member_id(s: &str) -> bool {
    s.len() == MEMBER_ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Opens (creating if needed) the member directory under `data_dir` for `cluster`.
///
/// # Errors
///
/// I/O errors, a cluster directory with several entries or a badly named one, or another process
/// already running as this member.
pub fn open(data_dir: &Path, cluster: &str) -> Result<MemberDir, MemberError> {
    let cluster_dir = data_dir.join(cluster);
    fs::create_dir_all(&cluster_dir).map_err(io(&cluster_dir))?;
    let mut entries = Vec::new();
    for entry in fs::read_dir(&cluster_dir).map_err(io(&cluster_dir))? {
        entries.push(entry.map_err(io(&cluster_dir))?.path());
    }
    let path = match entries.as_slice() {
        [] => {
            let mut raw = [0u8; MEMBER_ID_LEN / 2];
            getrandom::fill(&mut raw).map_err(MemberError::Random)?;
            let path = cluster_dir.join(hex::encode(raw));
            fs::create_dir(&path).map_err(io(&path))?;
            // The new directory entry must survive a crash, or a restart would make another id.
            File::open(&cluster_dir).and_then(|d| d.sync_all()).map_err(io(&cluster_dir))?;
            path
        }
        [one] => one.clone(),
        _ => return Err(MemberError::Ambiguous(cluster_dir)),
    };
    let id = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    if !is_member_id(&id) || !path.is_dir() {
        return Err(MemberError::BadId(path));
    }
    let lock_path = path.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(MemberError::Locked { id, path }),
        Err(fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
    }
    Ok(MemberDir { id, path, _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_created_once_and_locked() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path(), "dev").unwrap();
        assert!(is_member_id(&first.id), "{}", first.id);
        let err = open(dir.path(), "dev").unwrap_err();
        assert!(matches!(err, MemberError::Locked { .. }), "{err}");
        let id = first.id.clone();
        drop(first);
        assert_eq!(open(dir.path(), "dev").unwrap().id, id);
        assert_ne!(open(dir.path(), "other").unwrap().id, id);
    }

    #[test]
    fn stray_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("dev/not-an-id")).unwrap();
        assert!(matches!(open(dir.path(), "dev"), Err(MemberError::BadId(_))));
        fs::create_dir_all(dir.path().join("dev/second")).unwrap();
        assert!(matches!(open(dir.path(), "dev"), Err(MemberError::Ambiguous(_))));
    }
}
