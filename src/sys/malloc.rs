//! glibc malloc's arena limit, `mallopt(M_ARENA_MAX)`.

/// Lets glibc's malloc use at most `n` arenas. It makes one per thread that
/// allocates under contention, up to 8 per core, and memory freed by another thread
/// returns to the arena that gave it, where only the threads attached to that arena
/// reuse it. A split group's write buffers are allocated by the server's threads
/// (which come and go) and freed by the shipper, so with many arenas its resident
/// memory kept growing past every bound it keeps (to 1 GiB in a few seconds of 1 MiB
/// writes, against 0.5 GiB with 2 arenas). Returns whether glibc took the setting.
pub fn limit_malloc_arenas(n: i32) -> bool {
    // SAFETY: mallopt takes two integers and changes only malloc's own settings; it
    // is safe to call at any time, from any thread.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_an_arena_limit() {
        assert!(super::limit_malloc_arenas(4));
    }
}
