//! Process-wide settings of the SQLite library, made before its first use (SQLite takes them
//! only then): its allocator and its page cache.
//!
//! **Allocator.** SQLite allocates through the C library's `malloc` unless told otherwise, and
//! by default counts every allocation under a global mutex (memory statistics Tidings never
//! reads). Its statement journals are the busiest user: each change in a batch is a savepoint
//! whose journal copies every page it first touches into fresh chunks of about 1 KiB. In
//! scenario b glibc's `malloc`/`free` for SQLite took ≈ 4 % of Tidings' CPU and the statistics'
//! mutex ≈ 1 %. SQLite now allocates from mimalloc, Tidings' own allocator, with the statistics
//! off.
//!
//! **Page cache.** At the end of every write transaction SQLite asks its page cache to drop
//! the pages past the end of the database (`xTruncate(size + 1)`). The default cache knows
//! only the largest page number it has *ever* held since the last truncate, and when that is
//! far above the limit it visits every slot of its hash table: one per cached page. B-tree
//! balancing renumbers pages through a temporary number, the lock page's (1 GiB ÷ page size +
//! 1), while it sorts siblings, so after most transactions that split or merge pages the cache
//! believes it holds page 262,145 and the next commit visits every cached page though none is
//! dropped. With the writer's 128 MiB cache that walk was 6–7 % of Tidings' CPU in scenario b,
//! all of it while holding the writer (BENCHMARKS.md).
//!
//! The wrapper forwards every call to the default cache and keeps, per cache, the largest page
//! number a page may really have; it forwards a truncate only when some page may be at or past
//! the limit. The temporary number is counted apart: while any page carries it, truncates are
//! forwarded as before.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The default page cache's methods, as SQLite had them before the wrapper went in.
struct Methods(ffi::sqlite3_pcache_methods2);

// SAFETY: the methods are plain function pointers and SQLite's own (null) argument pointer;
// they are written once before SQLite starts and only read afterwards.
unsafe impl Send for Methods {}
unsafe impl Sync for Methods {}

static DEFAULT: OnceLock<Methods> = OnceLock::new();

/// Truncates forwarded to the default cache and truncates found to have nothing to drop.
static FORWARDED: AtomicU64 = AtomicU64::new(0);
static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// One cache (one per database a connection has open), as handed to SQLite.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// No page has a number above this (apart from `temp_key`).
    max_key: c_uint,
    /// The lock page's number for this page size: the number balancing borrows.
    temp_key: c_uint,
    /// How many pages carry `temp_key` now.
    at_temp: u32,
}

/// Makes the settings. It must run before SQLite is first used in the process; afterwards
/// SQLite refuses them and this returns `false` (SQLite keeps its defaults, which are only
/// slower). Idempotent.
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| install_allocator() && install_page_cache())
}

fn install_allocator() -> bool {
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
    // SAFETY: both calls take their documented argument types; MALLOC copies the struct, whose
    // methods stay valid for the life of the process.
    unsafe {
        ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) == ffi::SQLITE_OK
            && ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &methods as *const _)
                == ffi::SQLITE_OK
    }
}

// SQLite's allocator interface. Every block starts with a header that holds its size (as
// SQLite's own allocator does where `malloc_usable_size` is missing): small blocks, the
// short-lived ones (statement journal chunks, values, cursors), come from mimalloc; blocks of
// a page or more, mostly the page cache's, from the C library, which fits them more tightly
// than mimalloc's size classes (all on mimalloc, Tidings' RSS in scenario b was 44 MiB higher).

/// Keeps the blocks SQLite sees 16-byte aligned.
const HEADER: usize = 16;
/// Blocks this large or larger come from the C library.
const LARGE: usize = 4096;

unsafe fn raw_alloc(size: usize) -> *mut c_void {
    if size < LARGE {
        libmimalloc_sys::mi_malloc(size + HEADER)
    } else {
        libc::malloc(size + HEADER)
    }
}

/// # Safety
/// `p` is a block `mem_malloc` or `mem_realloc` returned and not yet freed.
unsafe fn header(p: *mut c_void) -> (*mut c_void, usize) {
    let base = (p as *mut u8).sub(HEADER) as *mut c_void;
    (base, *(base as *const usize))
}

/// Writes the size header at `base` (a block of `size + HEADER` bytes, or null) and returns
/// what SQLite sees: the block after the header.
unsafe fn stamp(base: *mut c_void, size: usize) -> *mut c_void {
    if base.is_null() {
        return base;
    }
    *(base as *mut usize) = size;
    (base as *mut u8).add(HEADER) as *mut c_void
}

unsafe fn raw_free(base: *mut c_void, size: usize) {
    if size < LARGE {
        libmimalloc_sys::mi_free(base)
    } else {
        libc::free(base)
    }
}

unsafe extern "C" fn mem_malloc(size: c_int) -> *mut c_void {
    let Ok(size) = usize::try_from(size) else {
        return std::ptr::null_mut();
    };
    stamp(raw_alloc(size), size)
}

unsafe extern "C" fn mem_free(p: *mut c_void) {
    if !p.is_null() {
        let (base, size) = header(p);
        raw_free(base, size)
    }
}

unsafe extern "C" fn mem_realloc(p: *mut c_void, size: c_int) -> *mut c_void {
    let Ok(new) = usize::try_from(size) else {
        return std::ptr::null_mut();
    };
    if p.is_null() {
        return mem_malloc(size);
    }
    let (base, old) = header(p);
    if (old < LARGE) == (new < LARGE) {
        // Same allocator: it may grow the block in place.
        let grown = if new < LARGE {
            libmimalloc_sys::mi_realloc(base, new + HEADER)
        } else {
            libc::realloc(base, new + HEADER)
        };
        return stamp(grown, new);
    }
    let q = mem_malloc(size);
    if !q.is_null() {
        std::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, old.min(new));
        mem_free(p);
    }
    q
}

unsafe extern "C" fn mem_size(p: *mut c_void) -> c_int {
    if p.is_null() {
        return 0;
    }
    c_int::try_from(header(p).1).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn mem_roundup(size: c_int) -> c_int {
    // Multiples of 8, as SQLite's own allocator rounds.
    size.saturating_add(7) & !7
}

unsafe extern "C" fn mem_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn mem_shutdown(_: *mut c_void) {}

fn install_page_cache() -> bool {
    let mut default = std::mem::MaybeUninit::<ffi::sqlite3_pcache_methods2>::zeroed();
    // SAFETY: GETPCACHE2 writes the current methods into the struct it is given.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, default.as_mut_ptr()) };
    if rc != ffi::SQLITE_OK {
        return false;
    }
    // SAFETY: SQLite filled it in (zeroed memory is a valid value of this struct anyway).
    let default = unsafe { default.assume_init() };
    if default.xCreate.is_none() || DEFAULT.set(Methods(default)).is_err() {
        return false;
    }
    let ours = ffi::sqlite3_pcache_methods2 {
        xCreate: Some(create),
        xCachesize: Some(cachesize),
        xPagecount: Some(pagecount),
        xFetch: Some(fetch),
        xUnpin: Some(unpin),
        xRekey: Some(rekey),
        xTruncate: Some(truncate),
        xDestroy: Some(destroy),
        xShrink: Some(shrink),
        // xInit and xShutdown take `pArg`, which stays the default's.
        ..default
    };
    // SAFETY: PCACHE2 copies the struct; every method forwards to the default's.
    unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &ours as *const _) == ffi::SQLITE_OK }
}

/// Truncates forwarded to SQLite's cache, and those skipped because nothing was past the
/// limit, since the process started.
pub fn page_cache_truncates() -> (u64, u64) {
    (
        FORWARDED.load(Ordering::Relaxed),
        SKIPPED.load(Ordering::Relaxed),
    )
}

fn default() -> &'static ffi::sqlite3_pcache_methods2 {
    &DEFAULT
        .get()
        .expect("the wrapper is installed only after the default is kept")
        .0
}

/// # Safety
/// `p` is a pointer `create` returned and `destroy` has not freed.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    &mut *(p as *mut Cache)
}

unsafe extern "C" fn create(
    size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let inner = (default().xCreate.expect("checked at install"))(size, extra, purgeable);
    if inner.is_null() {
        return inner;
    }
    let temp_key = if size > 0 {
        (0x4000_0000 / size as c_uint) + 1
    } else {
        c_uint::MAX
    };
    Box::into_raw(Box::new(Cache {
        inner,
        max_key: 0,
        temp_key,
        at_temp: 0,
    })) as *mut ffi::sqlite3_pcache
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, n: c_int) {
    if let Some(f) = default().xCachesize {
        f(cache(p).inner, n)
    }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    default().xPagecount.map_or(0, |f| f(cache(p).inner))
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    let c = cache(p);
    let page = (default().xFetch.expect("a page cache fetches"))(c.inner, key, create);
    if !page.is_null() {
        c.max_key = c.max_key.max(key);
    }
    page
}

unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    (default().xUnpin.expect("a page cache unpins"))(cache(p).inner, page, discard)
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    let c = cache(p);
    (default().xRekey.expect("a page cache rekeys"))(c.inner, page, old, new);
    if old == c.temp_key {
        c.at_temp = c.at_temp.saturating_sub(1);
    }
    if new == c.temp_key {
        c.at_temp += 1;
    } else {
        c.max_key = c.max_key.max(new);
    }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let c = cache(p);
    if c.at_temp == 0 && c.max_key < limit {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    FORWARDED.fetch_add(1, Ordering::Relaxed);
    (default().xTruncate.expect("a page cache truncates"))(c.inner, limit);
    // Every page numbered `limit` or more is gone.
    c.max_key = c.max_key.min(limit.saturating_sub(1));
    if c.temp_key >= limit {
        c.at_temp = 0;
    }
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    let c = Box::from_raw(p as *mut Cache);
    if let Some(f) = default().xDestroy {
        f(c.inner)
    }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(f) = default().xShrink {
        f(cache(p).inner)
    }
}
