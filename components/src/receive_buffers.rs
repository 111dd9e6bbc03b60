//! Receive buffers for kompact-net that are freed only once no message reads them.
//!
//! kompact-net does not copy a received frame: the network thread hands the receiving
//! actor a lease on a chunk of its receive buffer, and the actor decodes it later, from
//! its mailbox. kompact 0.12 frees a chunk's memory as soon as the chunk itself is
//! dropped, whatever leases on it are still queued. That happens when a TCP channel is
//! replaced while it still holds its receive chunk (a peer reconnects while the old
//! connection is being torn down): the old channel is dropped with the chunk, and the
//! leases already queued for [`TcpNetwork`](crate::network::TcpNetwork) point into freed
//! memory. Decoding one of them was a use-after-free, seen as a SIGSEGV in prost's
//! varint decoder under repeated connection cuts.
//!
//! [`DeferredFreeAllocator`] is the chunk allocator of every system's network thread.
//! It never frees a chunk when kompact-net releases it. It parks the chunk, numbers the
//! release, and sends that number to the network component as a [`Reclaim`] message.
//! The ordering argument:
//! - kompact-net calls the allocator only from its network thread (its receive pool
//!   and its own encode buffer; the dispatcher's buffers use the default allocator);
//! - the network thread enqueues every lease of a received frame straight into the
//!   mailbox of the one actor registered for it, [`TcpNetwork`](crate::network::TcpNetwork),
//!   and a mailbox is one FIFO queue for local and network messages;
//! - `TcpNetwork` decodes a frame into owned values inside `receive_network` and drops
//!   the lease before it returns.
//!
//! So when `TcpNetwork` handles `Reclaim(n)`, every lease the network thread queued
//! before release `n` has been decoded and dropped, and the chunks of releases up to
//! `n` can be freed. Leases of the network thread's own encode buffer are read only by
//! that thread, and their chunks are released only when the thread exits. What is still
//! parked when the allocator itself is dropped (no system uses it any more) is freed
//! then.

use std::fmt;
use std::sync::Mutex;

use kompact::net::buffers::{Chunk, ChunkAllocator};
use kompact::prelude::ActorRef;

/// Tells the network component that every chunk released up to this number may be
/// freed (see the module documentation for why this is safe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reclaim(pub u64);

/// One heap-allocated, zero-initialised chunk.
struct HeapChunk(Box<[u8]>);

impl Chunk for HeapChunk {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A chunk released by kompact-net and not yet freed.
struct Parked(*mut dyn Chunk);

// SAFETY: a parked chunk is owned by the allocator alone (kompact-net gave it up in
// `release`); the pointer is only turned back into its `Box` once, under the mutex.
unsafe impl Send for Parked {}

impl Parked {
    fn free(self) {
        // SAFETY: every parked pointer came from `Box::into_raw` in `get_chunk`, was
        // handed back once through `release`, and is freed here once.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

#[derive(Default)]
struct State {
    /// Released chunks with the number of their release, oldest first.
    parked: Vec<(u64, Parked)>,
    /// Releases so far.
    released: u64,
    /// Where `Reclaim` messages go; unset until the network component is registered.
    reaper: Option<ActorRef<Reclaim>>,
    /// Chunks handed out and not freed, for tests and diagnostics.
    live: usize,
}

/// The chunk allocator of a system's network thread; see the module documentation.
pub struct DeferredFreeAllocator {
    chunk_size: usize,
    state: Mutex<State>,
}

impl DeferredFreeAllocator {
    /// An allocator of `chunk_size`-byte chunks.
    pub fn new(chunk_size: usize) -> Self {
        DeferredFreeAllocator {
            chunk_size,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every mutation is
        // a single push, drain or counter update), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the actor that receives [`Reclaim`] messages (the network component) and
    /// sends it one for what was released before.
    pub fn set_reaper(&self, reaper: ActorRef<Reclaim>) {
        let mut st = self.state();
        let released = st.released;
        st.reaper = Some(reaper.clone());
        drop(st);
        if released > 0 {
            reaper.tell(Reclaim(released));
        }
    }

    /// Frees the chunks of releases `1..=upto`. Called by the network component when
    /// it handles `Reclaim(upto)`.
    pub fn reclaim(&self, upto: u64) {
        let freed: Vec<Parked> = {
            let mut st = self.state();
            let n = st.parked.partition_point(|(at, _)| *at <= upto);
            st.live -= n;
            st.parked.drain(..n).map(|(_, p)| p).collect()
        };
        freed.into_iter().for_each(Parked::free);
    }

    /// Chunks released and not yet freed.
    pub fn parked(&self) -> usize {
        self.state().parked.len()
    }

    /// Chunks kompact-net has released so far.
    pub fn released(&self) -> u64 {
        self.state().released
    }

    /// Chunks allocated and not yet freed (in use by kompact-net or parked).
    pub fn live(&self) -> usize {
        self.state().live
    }
}

impl fmt::Debug for DeferredFreeAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state();
        f.debug_struct("DeferredFreeAllocator")
            .field("chunk_size", &self.chunk_size)
            .field("live", &st.live)
            .field("parked", &st.parked.len())
            .field("released", &st.released)
            .finish()
    }
}

impl ChunkAllocator for DeferredFreeAllocator {
    fn get_chunk(&self) -> *mut dyn Chunk {
        self.state().live += 1;
        let chunk: Box<dyn Chunk> = Box::new(HeapChunk(vec![0u8; self.chunk_size].into()));
        Box::into_raw(chunk)
    }

    unsafe fn release(&self, ptr: *mut dyn Chunk) {
        let (n, reaper) = {
            let mut st = self.state();
            st.released += 1;
            let n = st.released;
            st.parked.push((n, Parked(ptr)));
            (n, st.reaper.clone())
        };
        if let Some(r) = reaper {
            r.tell(Reclaim(n));
        }
    }
}

impl Drop for DeferredFreeAllocator {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, p) in st.parked.drain(..) {
            p.free();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_chunks_are_freed_only_by_reclaim_up_to_their_number() {
        let a = DeferredFreeAllocator::new(64);
        let chunks: Vec<_> = (0..3).map(|_| a.get_chunk()).collect();
        assert_eq!(a.live(), 3);
        // SAFETY: each pointer came from `get_chunk` and is released once.
        for &c in &chunks {
            unsafe { a.release(c) };
        }
        assert_eq!((a.parked(), a.live()), (3, 3));
        a.reclaim(2);
        assert_eq!((a.parked(), a.live()), (1, 1));
        a.reclaim(2);
        assert_eq!(a.parked(), 1, "a repeated reclaim frees nothing more");
        a.reclaim(3);
        assert_eq!((a.parked(), a.live()), (0, 0));
    }

    #[test]
    fn chunks_are_zeroed_and_of_the_configured_size() {
        let a = DeferredFreeAllocator::new(1024);
        let c = a.get_chunk();
        // SAFETY: `c` is a live chunk from `get_chunk`, read before it is released.
        let (len, zero) = unsafe {
            let len = (*c).len();
            let bytes = std::slice::from_raw_parts((*c).as_mut_ptr(), len);
            (len, bytes.iter().all(|b| *b == 0))
        };
        assert_eq!((len, zero), (1024, true));
        // SAFETY: released once; freed when the allocator is dropped.
        unsafe { a.release(c) };
    }
}
