//! Read buffers lent to the relay's requests while they are in flight.
//!
//! An idle connection holds no buffer, so every request needs one on each side; from the
//! allocator, a 4 KiB block is a "large" request for glibc, which sorts its freed small
//! blocks first (`malloc_consolidate`): about a sixth of the relay's own CPU time under
//! connection-per-request load. A short stack of returned buffers serves them instead,
//! the most recently used (still in cache) first.

use bytes::BytesMut;
use parking_lot::Mutex;

/// How many buffers are kept: enough for the requests in flight at once on a busy core;
/// beyond that a buffer goes back to the allocator.
const KEEP: usize = 64;

/// Buffers that grew past this (a large body read) go back to the allocator: the stack
/// must not pin large blocks for the process's life.
const MAX_KEPT: usize = 32 * 1024;

#[derive(Debug, Default)]
pub struct Buffers {
    free: Mutex<Vec<BytesMut>>,
}

impl Buffers {
    /// An empty buffer, with room from an earlier request when one is kept.
    pub fn take(&self) -> BytesMut {
        self.free.lock().pop().unwrap_or_default()
    }

    /// Takes `buf` back, whatever it still holds (its contents are discarded).
    pub fn give(&self, mut buf: BytesMut) {
        buf.clear();
        // `capacity()` counts only the room after the bytes already consumed; `try_reclaim`
        // judges the whole allocation: none at all, or one larger than MAX_KEPT, is not kept.
        if !buf.try_reclaim(1) || buf.try_reclaim(MAX_KEPT + 1) {
            return;
        }
        let mut free = self.free.lock();
        if free.len() < KEEP {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returned_buffers_are_reused_empty_and_bounded() {
        let buffers = Buffers::default();
        let mut a = buffers.take();
        a.extend_from_slice(&[7; 100]);
        let ptr = a.as_ptr();
        buffers.give(a);
        let b = buffers.take();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the same block came back");
        // Nothing with no room, nothing large, nothing beyond KEEP.
        buffers.give(BytesMut::new());
        buffers.give(BytesMut::with_capacity(MAX_KEPT + 1));
        assert!(buffers.free.lock().is_empty());
        for _ in 0..KEEP + 5 {
            buffers.give(BytesMut::with_capacity(64));
        }
        assert_eq!(buffers.free.lock().len(), KEEP);
    }

    #[test]
    fn consumed_bytes_do_not_hide_the_size_of_the_allocation() {
        use bytes::Buf;
        let buffers = Buffers::default();
        // A large block read to its end: the room left is small, the block is not.
        let mut large = BytesMut::with_capacity(4 * MAX_KEPT);
        large.extend_from_slice(&vec![1; 4 * MAX_KEPT - 100]);
        large.advance(4 * MAX_KEPT - 100);
        assert!(large.capacity() <= MAX_KEPT);
        buffers.give(large);
        assert!(buffers.free.lock().is_empty());
        // A small block read to its very end is kept, with all its room back.
        let mut full = BytesMut::with_capacity(4096);
        full.extend_from_slice(&[1; 4096]);
        full.advance(4096);
        assert_eq!(full.capacity(), 0);
        buffers.give(full);
        assert!(buffers.take().capacity() >= 4096);
    }
}
