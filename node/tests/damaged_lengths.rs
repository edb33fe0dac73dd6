//! Regression tests for the fuzzers' findings: a damaged length field in a Raft log chunk or a
//! snapshot file is an error that costs what the input holds, never an allocation of what the
//! field claims. A counting allocator (this test binary's own) records the largest allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct LargestAllocation;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Runs `f` and returns the largest single allocation it made (one test function: no other
/// test thread allocates meanwhile).
fn largest_allocation_of(f: impl FnOnce()) -> usize {
    LARGEST.store(0, Ordering::Relaxed);
    f();
    LARGEST.load(Ordering::Relaxed)
}

const LIMIT: usize = 1024 * 1024;

#[test]
fn damaged_lengths_are_errors_not_allocations() {
    // fuzz/artifacts/log_records/oom-b8978c…: a SaveVote record whose framed length says
    // 0x1000_0000 (with its complement) in 15 bytes; the decoder allocated 256 MiB.
    let record = [0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0xef, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff];
    let mut outcome = None;
    let largest = largest_allocation_of(|| outcome = Some(petkv::store::log_store::decode_records(&record)));
    let (decoded, error) = outcome.expect("ran");
    assert_eq!(decoded, 0);
    assert_eq!(error.expect("a damaged record is an error").kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(largest < LIMIT, "decoding 15 bytes allocated {largest} bytes");

    // A snapshot header whose metadata length claims 64 MiB - 1 (under the 64 MiB field cap).
    let mut snapshot = b"PETKVSNP".to_vec();
    snapshot.extend_from_slice(&petkv::store::snapshot::FORMAT.to_le_bytes());
    snapshot.extend_from_slice(&(64 * 1024 * 1024 - 1u32).to_le_bytes());
    snapshot.extend_from_slice(b"short");
    let mut result = None;
    let largest =
        largest_allocation_of(|| result = Some(petkv::store::snapshot::read_from(snapshot.as_slice(), |_, _| Ok(()))));
    let err = result.expect("ran").expect_err("a cut-short snapshot is an error");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(largest < LIMIT, "reading a 21-byte snapshot allocated {largest} bytes");
}
