//! SQLite's allocator, installed by `tidings` at start-up, before SQLite is first used (SQLite
//! accepts it only then). This is the workspace's only unsafe code; every other crate forbids
//! it.
//!
//! SQLite allocates through the C library's `malloc` unless told otherwise, and by default
//! counts every allocation under a global mutex (memory statistics Tidings never reads). Its
//! statement journals are the busiest user: each change in a batch is a savepoint whose
//! journal copies every page it first touches into fresh chunks of about 1 KiB. [`install`]
//! sends blocks under a page to mimalloc, Tidings' own allocator, leaves blocks of a page or
//! more (the page cache's) on the C library, which fits them more tightly than mimalloc's
//! size classes, and turns the statistics off. Every block starts with a 16-byte header that
//! holds its size (as SQLite's own allocator does where `malloc_usable_size` is missing).
//!
//! **Why it stays.** Counted by `valgrind --tool=callgrind` on the fixed workload of
//! `crates/tidings/examples/store_workload.rs` (20,000 meeting moments through the hierarchy,
//! 80,000 webhooks claimed and recorded, a 51 MiB database): 744,511 instructions per moment
//! with SQLite's own allocator, 675,259 with this one (−9.3 %; −8.7 and −9.9 % in two earlier
//! rounds); peak RSS 85.7 against 86.3–86.6 MiB. A wrapper of SQLite's page cache that
//! skipped needless truncate walks saved 0.8–1.2 % beside it and was removed (BENCHMARKS.md,
//! "SQLite's process-wide hooks, measured by instruction count").
//!
//! `scripts/memcheck` runs this crate's tests under Valgrind's memcheck.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// Keeps the blocks SQLite sees 16-byte aligned.
const HEADER: usize = 16;
/// Blocks this large or larger come from the C library.
const LARGE: usize = 4096;

/// Installs the allocator, once per process (later calls answer as the first did); `false`
/// if SQLite was already in use: it then keeps its own, which is only slower.
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(mem_malloc),
            xFree: Some(mem_free),
            xRealloc: Some(mem_realloc),
            xSize: Some(mem_size),
            xRoundup: Some(mem_roundup),
            xInit: Some(mem_init),
            xShutdown: Some(mem_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: MEMSTATUS takes an int; MALLOC takes a pointer to a `sqlite3_mem_methods`,
        // which it copies; the functions in it live as long as the process.
        unsafe {
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) == ffi::SQLITE_OK
                && ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &methods as *const _)
                    == ffi::SQLITE_OK
        }
    })
}

/// A block of `size + HEADER` bytes (or null) from the allocator that serves `size`.
fn raw_alloc(size: usize) -> *mut c_void {
    if size < LARGE {
        // SAFETY: mi_malloc takes any size and returns a block of it or null.
        unsafe { libmimalloc_sys::mi_malloc(size + HEADER) }
    } else {
        // SAFETY: malloc takes any size and returns a block of it or null.
        unsafe { libc::malloc(size + HEADER) }
    }
}

/// # Safety
/// `base` is a block `raw_alloc(size)` returned (or `mi_realloc`/`realloc` grew to `size`),
/// not yet freed.
unsafe fn raw_free(base: *mut c_void, size: usize) {
    if size < LARGE {
        // SAFETY: by this function's contract, a live block of mimalloc's.
        unsafe { libmimalloc_sys::mi_free(base) }
    } else {
        // SAFETY: by this function's contract, a live block of the C library's.
        unsafe { libc::free(base) }
    }
}

/// The block's start and the size written in its header.
///
/// # Safety
/// `p` is a block `mem_malloc` or `mem_realloc` returned and not yet freed.
unsafe fn header(p: *mut c_void) -> (*mut c_void, usize) {
    // SAFETY: by this function's contract `p` is `HEADER` bytes into a live block whose first
    // bytes `stamp` wrote as a `usize` (16-byte aligned, so aligned for it).
    unsafe {
        let base = (p as *mut u8).sub(HEADER) as *mut c_void;
        (base, *(base as *const usize))
    }
}

/// Writes the size header at `base` and returns what SQLite sees: the block after the
/// header (null stays null).
///
/// # Safety
/// `base` is null or a live block of at least `size + HEADER` bytes, 16-byte aligned.
unsafe fn stamp(base: *mut c_void, size: usize) -> *mut c_void {
    if base.is_null() {
        return base;
    }
    // SAFETY: by this function's contract the block is live, aligned and larger than the
    // header.
    unsafe {
        *(base as *mut usize) = size;
        (base as *mut u8).add(HEADER) as *mut c_void
    }
}

unsafe extern "C" fn mem_malloc(size: c_int) -> *mut c_void {
    let Ok(size) = usize::try_from(size) else {
        return std::ptr::null_mut();
    };
    // SAFETY: `raw_alloc` returns null or a block of `size + HEADER` bytes, aligned to 16 by
    // both allocators.
    unsafe { stamp(raw_alloc(size), size) }
}

unsafe extern "C" fn mem_free(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: SQLite frees only blocks this allocator gave it, once.
        unsafe {
            let (base, size) = header(p);
            raw_free(base, size)
        }
    }
}

unsafe extern "C" fn mem_realloc(p: *mut c_void, size: c_int) -> *mut c_void {
    let Ok(new) = usize::try_from(size) else {
        return std::ptr::null_mut();
    };
    if p.is_null() {
        // SAFETY: a fresh block, as `mem_malloc` makes one.
        return unsafe { mem_malloc(size) };
    }
    // SAFETY: SQLite reallocates only live blocks this allocator gave it.
    let (base, old) = unsafe { header(p) };
    if (old < LARGE) == (new < LARGE) {
        // Same allocator: it may grow the block in place.
        // SAFETY: `base` is a live block of the allocator called, and both return null or a
        // block of `new + HEADER` bytes, aligned to 16, that `stamp` may write.
        return unsafe {
            let grown = if new < LARGE {
                libmimalloc_sys::mi_realloc(base, new + HEADER)
            } else {
                libc::realloc(base, new + HEADER)
            };
            stamp(grown, new)
        };
    }
    // SAFETY: a fresh block of `new` bytes for SQLite; the copy reads `min(old, new)` bytes of
    // the live old block and writes them into the new one (distinct blocks), then frees the
    // old one once.
    unsafe {
        let q = mem_malloc(size);
        if !q.is_null() {
            std::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, old.min(new));
            mem_free(p);
        }
        q
    }
}

unsafe extern "C" fn mem_size(p: *mut c_void) -> c_int {
    if p.is_null() {
        return 0;
    }
    // SAFETY: SQLite asks the size of live blocks this allocator gave it.
    let size = unsafe { header(p).1 };
    c_int::try_from(size).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn mem_roundup(size: c_int) -> c_int {
    // Multiples of 8, as SQLite's own allocator rounds.
    size.saturating_add(7) & !7
}

unsafe extern "C" fn mem_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn mem_shutdown(_: *mut c_void) {}
