//! The in-memory answer cache of one site and what keeps it fresh.
//!
//! Keys are normalized request paths ([`SafePath`](super::path::SafePath)
//! text); values are what the path resolved to: a [`FileSet`] (small files
//! with their bytes, larger ones with their headers only) or a redirect.
//! "Not found" is never cached.
//!
//! Freshness: a `notify` (inotify) watcher on the root, started on the first
//! request on the blocking pool, clears the whole cache on any change below
//! the root (deploys change many files at once; refilling is cheap). While
//! the watcher is starting, or when it cannot be started or reports an error
//! (e.g. the inotify watch limit), every hit is revalidated: the path is
//! resolved again on the blocking pool, reusing cached bytes whose size,
//! times and inode did not change. A warning is logged once.
//! (Revalidation cannot see a same-size rewrite within the file system's
//! timestamp granularity; the watcher can.)
//!
//! Races: a generation counter is bumped on every clear; an answer loaded
//! while a clear happened is not stored.
//!
//! Limits: [`CACHE_CAPACITY_BYTES`] of file bytes and [`CACHE_MAX_ENTRIES`]
//! entries; when either is reached, arbitrary entries are dropped (an eighth
//! of them at least) to make room.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::disk::Resolved;

/// File bytes kept in memory per site, at most (bytes).
pub const CACHE_CAPACITY_BYTES: usize = 64 * 1024 * 1024;
/// Cached paths per site, at most.
pub const CACHE_MAX_ENTRIES: usize = 16 * 1024;
/// Bookkeeping bytes counted for each entry besides its key and file bytes.
const ENTRY_OVERHEAD: usize = 256;

/// The watcher is being started: hits are revalidated.
const MODE_STARTING: u8 = 0;
/// The watcher runs: hits are trusted.
const MODE_WATCHING: u8 = 1;
/// No watcher: hits are revalidated.
const MODE_REVALIDATE: u8 = 2;

#[derive(Default)]
struct Map {
    entries: HashMap<String, (Resolved, usize)>,
    bytes: usize,
}

/// Cached answers of one site.
pub(super) struct Cache {
    map: RwLock<Map>,
    generation: AtomicU64,
    mode: AtomicU8,
    warned: AtomicBool,
    name: String,
}

impl Cache {
    pub(super) fn new(name: &str) -> Cache {
        Cache {
            map: RwLock::new(Map::default()),
            generation: AtomicU64::new(0),
            mode: AtomicU8::new(MODE_STARTING),
            warned: AtomicBool::new(false),
            name: name.to_string(),
        }
    }

    /// The cached answer for `key`.
    pub(super) fn get(&self, key: &str) -> Option<Resolved> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.entries.get(key).map(|(r, _)| r.clone())
    }

    /// Whether a hit can be served without looking at the disk.
    pub(super) fn trusted(&self) -> bool {
        self.mode.load(Ordering::Acquire) == MODE_WATCHING
    }

    /// Take before loading; pass to [`insert`](Self::insert).
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Stores an answer loaded since `generation`, unless the cache was cleared meanwhile.
    pub(super) fn insert(&self, key: &str, generation: u64, answer: &Resolved) {
        let cost = match answer {
            Resolved::NotFound => return,
            Resolved::Redirect(_) => key.len() + ENTRY_OVERHEAD,
            Resolved::File(set) => key.len() + ENTRY_OVERHEAD + set.memory(),
        };
        if cost > CACHE_CAPACITY_BYTES {
            return;
        }
        let mut guard = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let map = &mut *guard;
        if let Some((_, old)) = map.entries.remove(key) {
            map.bytes -= old;
        }
        if map.bytes + cost > CACHE_CAPACITY_BYTES || map.entries.len() >= CACHE_MAX_ENTRIES {
            evict(map, cost);
        }
        map.bytes += cost;
        map.entries.insert(key.to_string(), (answer.clone(), cost));
    }

    /// Drops one entry (found stale while serving it).
    pub(super) fn remove(&self, key: &str) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, cost)) = map.entries.remove(key) {
            map.bytes -= cost;
        }
    }

    /// Drops everything and invalidates answers being loaded.
    pub(super) fn clear(&self) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.entries.clear();
        map.bytes = 0;
    }

    /// Number of cached paths.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    /// Switches to revalidating every hit; logs once why.
    pub(super) fn degrade(&self, why: &dyn std::fmt::Display) {
        self.mode.store(MODE_REVALIDATE, Ordering::Release);
        self.clear();
        if !self.warned.swap(true, Ordering::AcqRel) {
            log::warn!(
                "static site {:?}: cannot watch the root for changes ({why}); every cached file is now checked on disk before it is served",
                self.name
            );
        }
    }

    /// The watcher runs: trust hits from now on (unless it already failed).
    fn watching(&self) {
        if self
            .mode
            .compare_exchange(
                MODE_STARTING,
                MODE_WATCHING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            // Answers loaded before the watch began may already be stale.
            self.clear();
        }
    }
}

/// Drops arbitrary entries until `cost` more fits (and at least an eighth).
fn evict(map: &mut Map, cost: usize) {
    let at_least = map.entries.len() / 8 + 1;
    let mut victims = Vec::new();
    for (key, (_, c)) in &map.entries {
        let fits = map.bytes + cost <= CACHE_CAPACITY_BYTES
            && map.entries.len() - victims.len() < CACHE_MAX_ENTRIES;
        if victims.len() >= at_least && fits {
            break;
        }
        victims.push(key.clone());
        map.bytes -= c;
    }
    for key in victims {
        map.entries.remove(&key);
    }
}

/// Owns the watcher of one site; dropping it stops the watch.
#[derive(Default)]
pub(super) struct WatchSlot {
    started: AtomicBool,
    watcher: Mutex<Option<RecommendedWatcher>>,
}

impl WatchSlot {
    /// Starts watching `root` on the blocking pool, the first time only.
    /// Must be called inside a tokio runtime.
    pub(super) fn ensure_started(self: &Arc<Self>, cache: &Arc<Cache>, root: &Path) {
        if self.started.load(Ordering::Relaxed) || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let (slot, cache, root) = (Arc::clone(self), Arc::clone(cache), root.to_path_buf());
        tokio::task::spawn_blocking(move || match start_watcher(&cache, &root) {
            Ok(watcher) => {
                *slot.watcher.lock().unwrap_or_else(PoisonError::into_inner) = Some(watcher);
                cache.watching();
            }
            Err(e) => cache.degrade(&e),
        });
    }

    /// Never watch; revalidate every hit, or (`trust`) none.
    #[cfg(test)]
    pub(super) fn disable(&self, cache: &Cache, trust: bool) {
        self.started.store(true, Ordering::Release);
        if trust {
            cache.mode.store(MODE_WATCHING, Ordering::Release);
        } else {
            cache.degrade(&"disabled by a test");
        }
    }
}

fn start_watcher(cache: &Arc<Cache>, root: &Path) -> notify::Result<RecommendedWatcher> {
    let events = Arc::clone(cache);
    let handler = move |event: notify::Result<Event>| match event {
        Ok(event) if is_read_only(&event.kind) => {}
        Ok(_) => events.clear(),
        Err(e) => events.degrade(&e),
    };
    // Symlinks are not followed: targets inside the root are watched where
    // they are, and those outside are never served (a link to `/` would
    // otherwise watch the whole disk).
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = RecommendedWatcher::new(handler, config)?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// Opening and reading files (ours included) changes nothing.
fn is_read_only(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if !matches!(a, AccessKind::Close(AccessMode::Write)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn redirect() -> Resolved {
        Resolved::Redirect(HeaderValue::from_static("./x/"))
    }

    #[test]
    fn entries_are_bounded() {
        let cache = Cache::new("t");
        let generation = cache.generation();
        for i in 0..CACHE_MAX_ENTRIES * 2 + 7 {
            cache.insert(&format!("/{i}"), generation, &redirect());
            assert!(cache.len() <= CACHE_MAX_ENTRIES);
        }
        assert!(cache.len() > CACHE_MAX_ENTRIES / 2);
        let map = cache.map.read().unwrap();
        let counted: usize = map.entries.values().map(|(_, c)| c).sum();
        assert_eq!(map.bytes, counted);
    }

    #[test]
    fn answers_loaded_across_a_clear_are_not_stored() {
        let cache = Cache::new("t");
        let generation = cache.generation();
        cache.clear();
        cache.insert("/a", generation, &redirect());
        assert!(cache.get("/a").is_none());
        cache.insert("/a", cache.generation(), &redirect());
        assert!(cache.get("/a").is_some());
        cache.insert("/missing", cache.generation(), &Resolved::NotFound);
        assert!(cache.get("/missing").is_none());
        cache.remove("/a");
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn reads_do_not_invalidate() {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        assert!(is_read_only(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(is_read_only(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_read_only(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_read_only(&EventKind::Modify(ModifyKind::Any)));
        assert!(!is_read_only(&EventKind::Create(CreateKind::File)));
        assert!(!is_read_only(&EventKind::Other));
    }
}
