//! The allocator's part in memory use. mimalloc, nb-proxy's allocator, keeps freed pages for
//! reuse and hands them back to the system only when it next allocates, a second later by
//! default. A full decision sync frees a hundred megabytes of temporaries at once, and then
//! the thread that freed them may not allocate again for an hour: the process would keep them.
//! So: pages are committed as they are used (not a whole arena ahead), handed back 100 ms after
//! they empty, and a full sync hands its temporaries back at once ([`release_freed`]).

use libmimalloc_sys as mi;

// Option numbers of the mimalloc version this crate builds (`mi_option_e` in mimalloc.h); the
// test below checks them against their defaults.
const ARENA_EAGER_COMMIT: mi::mi_option_t = 4;
const PURGE_DELAY: mi::mi_option_t = 15;

/// Sets mimalloc's options; call first thing in `main`, before threads start.
pub fn configure() {
    // SAFETY: plain option setters of the C library, called before other threads exist.
    unsafe {
        mi::mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi::mi_option_set(PURGE_DELAY, 100);
    }
}

/// Hands the pages this thread (and abandoned threads) freed back to the system now.
pub fn release_freed() {
    // SAFETY: a collection of the calling thread's heap; safe at any point.
    unsafe { mi::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_numbers_are_this_mimalloc_versions() {
        // Their documented defaults: eager arena commit on overcommitting systems (2), purge
        // after 1000 ms. A new mimalloc that renumbered them fails here, not in production.
        unsafe {
            assert_eq!(mi::mi_option_get(ARENA_EAGER_COMMIT), 2);
            assert_eq!(mi::mi_option_get(PURGE_DELAY), 1000);
        }
    }
}
