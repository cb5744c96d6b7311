//! `tidings backup`: a consistent copy of a SQLite store, taken beside a running `serve`.
//!
//! The copy is made with `VACUUM INTO` on a connection of its own: it reads one snapshot of
//! the database (WAL lets it run while the writer goes on committing) and writes it, compacted,
//! to a new file. It takes no part in the `flock` with which `serve` owns the file: that lock
//! keeps a second *server* out, and a reader needs none.

use std::path::Path;

use super::exec::sqlite_path;
use super::{Result, StoreError};

/// Copies the SQLite store at `url` to `dest` (which must not exist); returns the copy's size.
pub fn backup_sqlite(url: &str, dest: &Path) -> Result<u64> {
    let source = sqlite_path(url)?;
    let failed = |reason: String| StoreError::File {
        path: dest.display().to_string(),
        reason,
    };
    if dest.exists() {
        return Err(failed("it exists already; give a new file".into()));
    }
    if !source.exists() {
        return Err(StoreError::File {
            path: source.display().to_string(),
            reason: "no such database file".into(),
        });
    }
    let dest_text = dest
        .to_str()
        .ok_or_else(|| failed("the path is not UTF-8".into()))?;
    let db = rusqlite::Connection::open_with_flags(
        &source,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The writer may hold its lock for a moment (a checkpoint); wait rather than fail.
    db.busy_timeout(std::time::Duration::from_secs(30))?;
    db.execute("VACUUM INTO ?1", [dest_text])?;
    drop(db);
    // The copy is a plain database file (no WAL beside it): check that it reads whole.
    let copy =
        rusqlite::Connection::open_with_flags(dest, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let check: String = copy.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(StoreError::Corrupt(format!(
            "the copy fails its check: {check}"
        )));
    }
    Ok(std::fs::metadata(dest)
        .map_err(|e| failed(e.to_string()))?
        .len())
}
