//! The bytes this process's allocator has handed out and not taken back, next to its RSS:
//! RSS also counts memory freed but kept by the allocator (glibc returns little of its heap
//! to the system once fragmented), so a step in RSS with a flat heap is retention, and a heap
//! that grows is a leak.

/// glibc's `struct mallinfo2` (glibc 2.33 and later).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[repr(C)]
#[derive(Default)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe extern "C" {
    fn mallinfo2() -> MallInfo2;
}

/// Bytes allocated and in use, in KiB: in the arenas (`uordblks`, all arenas) and in
/// blocks of their own (`hblkhd`, the large allocations glibc maps one by one).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn in_use_kib() -> Option<u64> {
    // SAFETY: mallinfo2 takes no argument, returns a plain struct by value and only reads
    // the allocator's statistics under its own locks.
    let info = unsafe { mallinfo2() };
    Some(((info.uordblks + info.hblkhd) / 1_024) as u64)
}

/// Not known with another allocator.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn in_use_kib() -> Option<u64> {
    None
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn a_live_allocation_shows_in_the_heap_in_use() {
        let before = super::in_use_kib().unwrap();
        let block = vec![1u8; 64 * 1_024 * 1_024];
        let during = super::in_use_kib().unwrap();
        assert!(
            during >= before + 60 * 1_024,
            "{before} KiB, then {during} KiB"
        );
        drop(block);
    }
}
