//! The JSON key store shared by the server and the `keys` commands.
//!
//! Every change is a read-modify-write under a cross-process lock on a
//! sibling `<store>.lock` file (the store itself is replaced by rename, so it
//! cannot carry the lock). Writes go to a temporary file in the same
//! directory, are fsynced and renamed over the store: readers see the old or
//! the new file, never half of one. The directory is created 0700 and the
//! file is written 0600 whatever the umask.
//!
//! A store path that is a symbolic link is written through: the file it
//! leads to is the one replaced (its temporary file and its `.lock` are
//! beside it), and the link stays a link.

pub(crate) mod location;

pub(crate) mod edit;
pub(crate) mod redis;

use crate::model::{STORE_VERSION, StoreFile, UsageBook};
use chrono::NaiveDate;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What can go wrong with the store. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists but is not a store this build can read.
    #[error(
        "the key store {path} is not valid JSON (line {line}, column {column}: {msg}); \
         fix it or move it aside. orproxy will not overwrite it"
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser said.
        msg: String,
    },
    /// The file has a version this build does not know.
    #[error(
        "the key store {path} has format version {found}, but this orproxy reads version {STORE_VERSION}; \
         use a newer orproxy or move the file aside. orproxy will not overwrite it"
    )]
    UnknownVersion {
        /// The store file.
        path: PathBuf,
        /// The version found in it.
        found: u64,
    },
    /// Reading, writing, locking or creating the directory failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "cannot read the key store".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Serialising the store failed (should not happen).
    #[error("cannot serialise the key store: {0}")]
    Serialise(#[from] serde_json::Error),
    /// A Redis store could not be read or written. The URL is shown
    /// without its password.
    #[error("{action} the shared key store {store}: {msg}")]
    Redis {
        /// What was being done, e.g. "cannot reach".
        action: &'static str,
        /// The store's URL, password hidden.
        store: String,
        /// What went wrong.
        msg: String,
    },
}

/// The key store, wherever it lives: the same snapshot operations on a
/// JSON file or on Redis.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// The JSON file (the default).
    File(FileStore),
    /// A Redis database shared by several instances.
    Redis(Box<redis::RedisStore>),
}

impl Backend {
    /// The store at `location` (nothing is touched until used).
    pub(crate) fn open(location: &location::Location) -> Result<Self, StoreError> {
        Ok(match location {
            location::Location::File(path) => Backend::File(FileStore::new(path)),
            location::Location::Redis(url) => {
                Backend::Redis(Box::new(redis::RedisStore::new(url)?))
            }
        })
    }

    /// The store's path, or its URL without the password.
    pub(crate) fn describe(&self) -> String {
        match self {
            Backend::File(store) => store.path().display().to_string(),
            Backend::Redis(store) => store.shown().to_owned(),
        }
    }

    /// Read the whole store.
    pub(crate) fn load(&self) -> Result<StoreFile, StoreError> {
        match self {
            Backend::File(store) => store.load(),
            Backend::Redis(store) => store.load(),
        }
    }

    /// The usage totals from day `since` on, `today` being the current UTC
    /// day (days no longer kept are left out).
    pub(crate) fn usage(
        &self,
        since: NaiveDate,
        today: NaiveDate,
    ) -> Result<UsageBook, StoreError> {
        let since = since.max(crate::model::first_kept_day(today));
        match self {
            Backend::File(store) => {
                let mut book = store.load()?.usage;
                book.days.retain(|day, _| *day >= since);
                Ok(book)
            }
            // Tomorrow too: another instance's clock may be a little ahead.
            Backend::Redis(store) => store.usage(since, today.succ_opt().unwrap_or(today)),
        }
    }

    /// Atomic read-modify-write of the whole store. `change` may run more
    /// than once on a Redis store (see [`redis::RedisStore::update`]).
    pub(crate) fn update<T>(
        &self,
        change: impl FnMut(&mut StoreFile) -> T,
    ) -> Result<T, StoreError> {
        match self {
            Backend::File(store) => store.update(change),
            Backend::Redis(store) => store.update(change),
        }
    }
}

/// The suffix of the store's temporary files.
const TEMP_SUFFIX: &str = ".tmp";

/// The most symbolic links followed to reach the store file (the kernel's
/// own limit).
const MAX_LINKS: usize = 40;

/// A handle on the store file at a path. Cheap; holds no open file.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

/// What was wrong with the permissions of an existing store, file or
/// directory (see [`FileStore::tighten_permissions`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LoosePermissions {
    /// The store file could be read or changed by other users; it is 0600 now.
    #[error(
        "the key store {path} was open to other users (mode {mode:04o}); it is 0600 now, \
         but the keys in it may have been read"
    )]
    FileTightened {
        /// The store file.
        path: PathBuf,
        /// Its mode before.
        mode: u32,
    },
    /// The store file could be read or changed by other users, and could
    /// not be made 0600.
    #[error(
        "the key store {path} is open to other users (mode {mode:04o}) and cannot be made 0600: {error}"
    )]
    FileLoose {
        /// The store file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// Why chmod failed.
        error: String,
    },
    /// A directory of the store that other users may enter, list or
    /// change. orproxy does not change directories it did not create (it
    /// may be shared on purpose).
    #[error(
        "the store directory {path} is open to other users (mode {mode:04o}); \
         `chmod 700 {path}` makes it private"
    )]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

/// The identity of the store file's current contents, to notice changes
/// without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStore {
    /// A store at `path`; nothing is touched until used.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The store file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Read the store. A missing file is an empty store. No lock is needed:
    /// the file is only ever replaced whole.
    pub(crate) fn load(&self) -> Result<StoreFile, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => self.parse(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StoreFile::default()),
            Err(source) => Err(StoreError::Io {
                action: "cannot read the key store",
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The current stamp of the file (None when it does not exist).
    pub(crate) fn stamp(&self) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(&self.path).ok()?;
        Some(Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
        })
    }

    /// Parse store bytes, checking the version before the records so an
    /// unknown version is reported as such.
    pub fn parse(&self, bytes: &[u8]) -> Result<StoreFile, StoreError> {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            path: self.path.clone(),
            line: e.line(),
            column: e.column(),
            msg: strip_position(&e.to_string()),
        };
        #[derive(serde::Deserialize)]
        struct Version {
            version: Option<serde_json::Value>,
        }
        let probe: Version = serde_json::from_slice(bytes).map_err(corrupt)?;
        match probe.version.as_ref().and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(STORE_VERSION) => {}
            Some(found) => {
                return Err(StoreError::UnknownVersion {
                    path: self.path.clone(),
                    found,
                });
            }
            None => {
                return Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    line: 1,
                    column: 1,
                    msg: "no numeric \"version\" field".into(),
                });
            }
        }
        serde_json::from_slice(bytes).map_err(corrupt)
    }

    /// Read-modify-write under the cross-process lock. `change` sees the
    /// current file and edits it; the file is written only when the records
    /// changed (or it did not exist yet). Returns what `change` returned.
    pub(crate) fn update<T>(
        &self,
        change: impl FnOnce(&mut StoreFile) -> T,
    ) -> Result<T, StoreError> {
        self.ensure_dir()?;
        let target = self.target()?;
        let lock = lock(&target)?;
        sweep_orphans(&target);
        let before = match fs::read(&target) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(StoreError::Io {
                    action: "cannot read the key store",
                    path: target,
                    source,
                });
            }
        };
        let mut file = match &before {
            Some(bytes) => self.parse(bytes)?,
            None => StoreFile::default(),
        };
        let original = file.clone();
        let out = change(&mut file);
        // Only a real change is written: a failed command, or one with
        // nothing to do, leaves the file byte for byte as it was.
        if before.is_none() || file != original {
            write_atomically(&target, &render(&file)?)?;
        }
        drop(lock);
        Ok(out)
    }

    /// Whether the server will be able to write the store: its directory
    /// exists (or is created) and takes a new file, and the lock can be
    /// taken. The store itself is left as it is.
    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        self.ensure_dir()?;
        let target = self.target()?;
        let lock = lock(&target)?;
        let dir = dir_of(&target).unwrap_or_else(|| Path::new("."));
        let probe = tempfile::Builder::new()
            .prefix(".orproxy-probe-")
            .suffix(TEMP_SUFFIX)
            .tempfile_in(dir)
            .and_then(|mut f| f.write_all(b"{}").and_then(|()| f.as_file().sync_all()));
        drop(lock);
        probe.map_err(|source| StoreError::Io {
            action: "cannot write in the store directory",
            path: dir.to_path_buf(),
            source,
        })
    }

    fn ensure_dir(&self) -> Result<(), StoreError> {
        let Some(dir) = self.dir() else {
            return Ok(());
        };
        if dir.is_dir() {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Io {
                action: "cannot create the store directory",
                path: dir.to_path_buf(),
                source,
            })?;
        // `mode` is filtered by the umask; make it exact.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
            StoreError::Io {
                action: "cannot set permissions on",
                path: dir.to_path_buf(),
                source,
            }
        })
    }

    fn dir(&self) -> Option<&Path> {
        dir_of(&self.path)
    }

    /// The file that holds the store: the path itself, or where its
    /// symbolic links lead (which may not exist yet). This is the file a
    /// write replaces, so a link to the store stays a link.
    fn target(&self) -> Result<PathBuf, StoreError> {
        let mut path = self.path.clone();
        for _ in 0..MAX_LINKS {
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let link = fs::read_link(&path).map_err(|source| StoreError::Io {
                        action: "cannot read the symbolic link",
                        path: path.clone(),
                        source,
                    })?;
                    // A relative link is relative to the link's directory.
                    path = match dir_of(&path) {
                        Some(dir) if link.is_relative() => dir.join(link),
                        _ => link,
                    };
                }
                Ok(_) => return Ok(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(path),
                Err(source) => {
                    return Err(StoreError::Io {
                        action: "cannot look up the key store",
                        path,
                        source,
                    });
                }
            }
        }
        Err(StoreError::Io {
            action: "cannot follow the symbolic links of the key store",
            path: self.path.clone(),
            source: io::Error::other(format!("more than {MAX_LINKS} symbolic links (a loop?)")),
        })
    }

    /// Make an existing store file that other users may read or change
    /// 0600, and report it, and report directories of the store (the
    /// path's, and its link target's) that other users may use.
    pub(crate) fn tighten_permissions(&self) -> Vec<LoosePermissions> {
        let mut found = Vec::new();
        let target = self.target().unwrap_or_else(|_| self.path.clone());
        let mut dirs: Vec<&Path> = [self.dir(), dir_of(&target)]
            .into_iter()
            .flatten()
            .collect();
        dirs.dedup();
        for dir in dirs {
            if let Some(mode) = loose_mode(dir) {
                found.push(LoosePermissions::Directory {
                    path: dir.to_path_buf(),
                    mode,
                });
            }
        }
        if let Some(mode) = loose_mode(&target) {
            found.push(
                match fs::set_permissions(&target, fs::Permissions::from_mode(0o600)) {
                    Ok(()) => LoosePermissions::FileTightened { path: target, mode },
                    Err(e) => LoosePermissions::FileLoose {
                        path: target,
                        mode,
                        error: e.to_string(),
                    },
                },
            );
        }
        found
    }
}

/// `path`'s directory, if it names one.
fn dir_of(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

/// The permission bits of an existing `path` (links followed) when they
/// let other users (group or others) in.
fn loose_mode(path: &Path) -> Option<u32> {
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

/// The lock file of the store held in `target`: `<target>.lock`, beside
/// it, so that every path leading to one store shares one lock. It is only
/// ever opened, never replaced, so it may itself be a link.
fn lock_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    target.with_file_name(name)
}

/// Take the exclusive cross-process lock of the store in `target`
/// (blocking). Released on drop.
fn lock(target: &Path) -> Result<File, StoreError> {
    let lock_path = lock_path(target);
    let io_err = |action, source| StoreError::Io {
        action,
        path: lock_path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| io_err("cannot open the store lock", e))?;
    file.lock()
        .map_err(|e| io_err("cannot lock the store", e))?;
    Ok(file)
}

/// Temporary files of the store in `target` are `.<its file name>.<random>.tmp`,
/// beside it.
fn temp_prefix(target: &Path) -> String {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    format!(".{name}.")
}

/// Remove temporary files left by a writer that was killed mid-write.
/// Called with the lock held: every writer creates its temporary file under
/// the lock, so any such file now is an orphan (and holds keys).
fn sweep_orphans(target: &Path) {
    let dir = dir_of(target).unwrap_or(Path::new("."));
    let prefix = temp_prefix(target);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(TEMP_SUFFIX) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Replace `target` with `bytes`: a temporary file beside it, fsynced,
/// renamed over it, and the directory fsynced.
fn write_atomically(target: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = dir_of(target).unwrap_or(Path::new("."));
    let io_err = |action, source| StoreError::Io {
        action,
        path: target.to_path_buf(),
        source,
    };
    // tempfile creates the file 0600 regardless of the umask.
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(target))
        .suffix(TEMP_SUFFIX)
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| io_err("cannot create a temporary file beside", e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io_err("cannot write the key store", e))?;
    tmp.persist(target)
        .map_err(|e| io_err("cannot replace the key store", e.error))?;
    // Make the rename itself durable.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The store as written: pretty-printed JSON with a final newline.
pub fn render(file: &StoreFile) -> Result<Vec<u8>, StoreError> {
    let mut out = serde_json::to_vec_pretty(file)?;
    out.push(b'\n');
    Ok(out)
}

/// serde_json appends " at line L column C"; the error already says where.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(pos) => msg[..pos].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_in(dir: &tempfile::TempDir) -> FileStore {
        FileStore::new(dir.path().join("sub").join("keys.json"))
    }

    #[test]
    fn missing_file_is_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(store_in(&dir).load().unwrap(), StoreFile::default());
    }

    #[test]
    fn update_creates_private_dir_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        store.update(|_| ()).unwrap();
        let file_mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        let dir_mode = fs::metadata(dir.path().join("sub"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(file_mode, 0o600);
        assert_eq!(dir_mode, 0o700);
        let text = fs::read_to_string(store.path()).unwrap();
        assert_eq!(text, "{\n  \"version\": 1,\n  \"keys\": []\n}\n");
    }

    #[test]
    fn corrupt_file_names_line_and_column_and_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        fs::create_dir_all(dir.path().join("sub")).unwrap();
        let bad = b"{\n  \"version\": 1,\n  \"keys\": [,]\n}\n";
        fs::write(store.path(), bad).unwrap();
        let err = store.update(|f| f.keys.clear()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("keys.json"), "{msg}");
        assert!(msg.contains("line 3, column 12"), "{msg}");
        assert_eq!(fs::read(store.path()).unwrap(), bad);
    }

    #[test]
    fn unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        fs::create_dir_all(dir.path().join("sub")).unwrap();
        fs::write(store.path(), b"{\"version\": 2, \"keys\": []}").unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, StoreError::UnknownVersion { found: 2, .. }));
        assert!(err.to_string().contains("version 2"));
    }

    #[test]
    fn orphaned_temporary_files_are_removed_and_other_stores_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        store.update(|_| ()).unwrap();
        let sub = dir.path().join("sub");
        let orphan = sub.join(".keys.json.abc123.tmp");
        let other = sub.join(".other.json.abc123.tmp");
        fs::write(&orphan, b"half a store with keys").unwrap();
        fs::write(&other, b"another store's write in progress").unwrap();
        store.update(|_| ()).unwrap();
        assert!(!orphan.exists());
        assert!(other.exists());
    }

    #[test]
    fn a_symlinked_store_is_written_through_and_stays_a_link() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let real_dir = dir.path().join("real");
        fs::create_dir(&real_dir).unwrap();
        let target = real_dir.join("keys.json");
        let link = dir.path().join("keys.json");
        symlink("real/keys.json", &link).unwrap();
        let store = FileStore::new(&link);
        // A link to nothing yet: the store is created where it leads.
        store.update(|_| ()).unwrap();
        store
            .update(|file| file.extra.insert("n".into(), 1.into()))
            .unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("real/keys.json"));
        assert_eq!(store.load().unwrap().extra["n"], 1);
        assert_eq!(FileStore::new(&target).load().unwrap().extra["n"], 1);
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The lock and the temporary files live beside the real file, so
        // both paths to the store share one lock.
        assert!(real_dir.join("keys.json.lock").exists());
        assert!(!dir.path().join("keys.json.lock").exists());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "only the link and real/: {names:?}");
    }

    #[test]
    fn a_chain_of_links_is_followed_and_a_loop_refused_by_name() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("keys.json");
        symlink(&target, dir.path().join("one")).unwrap();
        symlink("one", dir.path().join("two")).unwrap();
        FileStore::new(dir.path().join("two"))
            .update(|_| ())
            .unwrap();
        assert!(fs::symlink_metadata(&target).unwrap().is_file());
        assert!(
            fs::symlink_metadata(dir.path().join("two"))
                .unwrap()
                .is_symlink()
        );

        symlink("loop-b", dir.path().join("loop-a")).unwrap();
        symlink("loop-a", dir.path().join("loop-b")).unwrap();
        let looped = FileStore::new(dir.path().join("loop-a"));
        let err = looped.update(|_| ()).unwrap_err().to_string();
        assert!(err.contains("symbolic links"), "{err}");
        assert!(err.contains("loop-a"), "{err}");
        assert!(
            fs::symlink_metadata(dir.path().join("loop-a"))
                .unwrap()
                .is_symlink()
        );
    }

    #[test]
    fn a_store_open_to_others_is_made_private_and_its_directory_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        store.update(|_| ()).unwrap();
        assert_eq!(store.tighten_permissions(), [], "created private");
        let sub = dir.path().join("sub");
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(store.path(), fs::Permissions::from_mode(0o644)).unwrap();
        let found = store.tighten_permissions();
        assert_eq!(
            found,
            [
                LoosePermissions::Directory {
                    path: sub.clone(),
                    mode: 0o755
                },
                LoosePermissions::FileTightened {
                    path: store.path().to_path_buf(),
                    mode: 0o644
                }
            ]
        );
        assert!(found[0].to_string().contains("chmod 700"), "{}", found[0]);
        let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(&sub).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "a directory is left as it is");
    }

    /// A store as a newer orproxy might write it: fields this version does
    /// not know at every level.
    const NEWER: &str = r#"{
      "version": 1,
      "written_by": "orproxy 9.0",
      "keys": [
        {
          "id": "1a2b3c4d",
          "key": "sk-or-v1-aaaaaaaaaaaaaaaa",
          "added_at": "2026-01-01T00:00:00Z",
          "owner": {"team": "infra"},
          "state": {"disabled": true, "streak_started": "2026-01-02T00:00:00Z"},
          "info": {
            "creator_user_id": "user_1",
            "rate_limit": {"requests": 10},
            "free_model_daily_requests": {"used": 1, "window": "utc-day"}
          }
        },
        {"id": "5e6f7a8b", "key": "sk-or-v1-bbbbbbbbbbbbbbbb", "added_at": "2026-01-01T00:00:00Z"}
      ],
      "accounts": {"user_1": {"day": "2026-01-02", "free_requests": 4, "tier": "gold"}}
    }"#;

    #[test]
    fn fields_of_a_newer_version_survive_the_keys_commands() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        fs::create_dir_all(dir.path().join("sub")).unwrap();
        fs::write(store.path(), NEWER).unwrap();
        let now = chrono::Utc::now();
        // keys add (a new key), keys reactivate, keys remove.
        let added = crate::secret::ApiKey::parse("sk-or-v1-cccccccccccccccc").unwrap();
        store
            .update(|file| edit::add_key(file, &added, Some("new"), None, now))
            .unwrap();
        let first = crate::secret::ApiKey::parse("sk-or-v1-aaaaaaaaaaaaaaaa").unwrap();
        store
            .update(|file| edit::add_key(file, &first, None, None, now))
            .unwrap();
        store
            .update(|file| file.keys.retain(|r| r.id != "5e6f7a8b"))
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(v["written_by"], "orproxy 9.0");
        let key = &v["keys"][0];
        assert_eq!(key["owner"], serde_json::json!({"team": "infra"}));
        assert_eq!(key["state"]["streak_started"], "2026-01-02T00:00:00Z");
        assert_eq!(key["state"]["disabled"], false, "reactivated");
        assert_eq!(key["generation"], 1);
        assert_eq!(
            key["info"]["rate_limit"],
            serde_json::json!({"requests": 10})
        );
        assert_eq!(
            key["info"]["free_model_daily_requests"]["window"],
            "utc-day"
        );
        assert_eq!(v["accounts"]["user_1"]["tier"], "gold");
        assert_eq!(v["keys"].as_array().unwrap().len(), 2);
        assert_eq!(v["keys"][1]["label"], "new");
    }

    #[test]
    fn unchanged_update_does_not_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        store.update(|_| ()).unwrap();
        let stamp = store.stamp();
        store.update(|_| ()).unwrap();
        assert_eq!(store.stamp(), stamp);
    }
}
