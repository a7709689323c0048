//! Segment I/O behind a small trait, so fault tests can fail the Nth write or sync.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes to one segment file. Reads go through a memory map of the same file.
pub trait SegmentFile: Send + Sync + std::fmt::Debug {
    /// Writes all of `buf` at `offset`.
    ///
    /// # Errors
    ///
    /// The operating system's.
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;

    /// Makes every byte written so far durable (`fdatasync`).
    ///
    /// # Errors
    ///
    /// The operating system's.
    fn sync(&self) -> std::io::Result<()>;

    /// The file, for memory-mapping it.
    fn file(&self) -> &File;
}

/// Creates and opens segment files.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Creates a file of `size` bytes (sparse) at `path` and syncs it and its directory entry.
    ///
    /// # Errors
    ///
    /// The operating system's.
    fn create(&self, path: &Path, size: u64) -> std::io::Result<Arc<dyn SegmentFile>>;

    /// Opens an existing file for writing.
    ///
    /// # Errors
    ///
    /// The operating system's.
    fn open(&self, path: &Path) -> std::io::Result<Arc<dyn SegmentFile>>;
}

/// Plain files.
#[derive(Debug, Default)]
pub struct FileStorage;

#[derive(Debug)]
struct PlainFile(File);

impl SegmentFile for PlainFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }

    fn file(&self) -> &File {
        &self.0
    }
}

impl Storage for FileStorage {
    fn create(&self, path: &Path, size: u64) -> std::io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        file.set_len(size)?;
        file.sync_all()?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(Arc::new(PlainFile(file)))
    }

    fn open(&self, path: &Path) -> std::io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(PlainFile(file)))
    }
}

/// Plain files whose Nth write or Nth sync fails (counted from 1 across all files of the
/// storage); for fault tests.
#[derive(Debug, Default)]
pub struct FaultyStorage {
    pub fail_write: AtomicU64,
    pub fail_sync: AtomicU64,
    writes: Arc<AtomicU64>,
    syncs: Arc<AtomicU64>,
}

impl FaultyStorage {
    /// Fails the `n`-th write from now on (0 disables).
    pub fn fail_nth_write(&self, n: u64) {
        self.fail_write.store(n + self.writes.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Writes run so far, failed ones included.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Syncs run so far, failed ones included.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Fails the `n`-th sync from now on (0 disables).
    pub fn fail_nth_sync(&self, n: u64) {
        self.fail_sync.store(n + self.syncs.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: PlainFile,
    storage: Arc<FaultyStorage>,
}

fn injected(what: &str) -> std::io::Error {
    std::io::Error::other(format!("injected {what} failure"))
}

impl SegmentFile for FaultyFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let n = self.storage.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.storage.fail_write.load(Ordering::SeqCst) {
            return Err(injected("write"));
        }
        self.inner.write_at(buf, offset)
    }

    fn sync(&self) -> std::io::Result<()> {
        let n = self.storage.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.storage.fail_sync.load(Ordering::SeqCst) {
            return Err(injected("sync"));
        }
        self.inner.sync()
    }

    fn file(&self) -> &File {
        self.inner.file()
    }
}

/// `FaultyStorage` shared with the test that arms it.
#[derive(Debug, Clone)]
pub struct Faulty(pub Arc<FaultyStorage>);

impl Storage for Faulty {
    fn create(&self, path: &Path, size: u64) -> std::io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        file.set_len(size)?;
        Ok(Arc::new(FaultyFile { inner: PlainFile(file), storage: Arc::clone(&self.0) }))
    }

    fn open(&self, path: &Path) -> std::io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(FaultyFile { inner: PlainFile(file), storage: Arc::clone(&self.0) }))
    }
}
