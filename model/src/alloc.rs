//! A global allocator that refuses single allocations above a cap while a
//! model loads or scores.
//!
//! A model is data, and data can be hostile: an ONNX or TensorFlow graph can
//! declare a small operation (`Tile`, `ConstantOfShape`, `Fill`, …) whose
//! constant inputs ask for a tensor of tens of gigabytes, which tract builds
//! while it optimizes the graph. With the system's overcommit such an
//! allocation succeeds, and filling it takes the machine's memory until the
//! process is killed. With [`CappedAllocator`] installed, an allocation above
//! the cap made while a model loads or scores (inside [`capped`], where the
//! ONNX and TensorFlow formats read, optimize and run their graphs) fails at
//! once instead: tract reports that as a panic,
//! which the loaders turn into a [`ModelError`](crate::ModelError) naming the
//! model, and a server goes on with its current model. (An allocation that
//! Rust's collections make aborts the process: still at once, not after the
//! memory ran out.) Allocations made elsewhere are not capped.
//!
//! Install it in a binary that loads models it does not trust (around another
//! allocator with [`CappedAllocator::wrapping`]):
//!
//! ```
//! use flowstage_model::CappedAllocator;
//!
//! #[global_allocator]
//! static ALLOCATOR: CappedAllocator = CappedAllocator::new(1 << 30);
//! # fn main() {}
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Whether this thread's allocations are capped now.
    static CAPPED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread's allocations capped by a [`CappedAllocator`]
/// (when one is installed), as model loads and scoring do. Nests.
pub fn capped<R>(f: impl FnOnce() -> R) -> R {
    let _capped = Capped::new();
    f()
}

/// Caps this thread's allocations until dropped (see [`capped`]).
pub(crate) struct Capped(bool);

impl Capped {
    pub(crate) fn new() -> Self {
        Capped(CAPPED.try_with(|c| c.replace(true)).unwrap_or(false))
    }
}

impl Drop for Capped {
    fn drop(&mut self) {
        let _ = CAPPED.try_with(|c| c.set(self.0));
    }
}

#[cfg_attr(not(any(feature = "onnx", feature = "tensorflow")), allow(dead_code))]
/// What a panic of tract while `doing` something means: an allocation refused
/// (tract asserts that its tensors' allocations succeed) or a bug.
pub(crate) fn panicked(doing: &str, payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    if text.contains("failed to allocate") {
        format!(
            "tract could not allocate a tensor while {doing}: the model asks for more memory \
             than this process allows one tensor"
        )
    } else {
        format!("tract panicked while {doing}")
    }
}

/// Whether an allocation of `size` bytes is refused under `cap`.
#[inline]
fn refused(size: usize, cap: usize) -> bool {
    size > cap && CAPPED.try_with(Cell::get).unwrap_or(false)
}

/// An allocator (the system's by default) refusing (returning null for) any
/// single allocation larger than its cap made inside [`capped`]. See the
/// [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct CappedAllocator<A = System> {
    inner: A,
    cap: usize,
}

impl CappedAllocator<System> {
    /// The system allocator, refusing allocations of more than `cap` bytes
    /// inside [`capped`].
    pub const fn new(cap: usize) -> Self {
        CappedAllocator { inner: System, cap }
    }
}

impl<A> CappedAllocator<A> {
    /// `inner` (mimalloc, jemalloc, …), refusing allocations of more than
    /// `cap` bytes inside [`capped`].
    pub const fn wrapping(inner: A, cap: usize) -> Self {
        CappedAllocator { inner, cap }
    }

    /// The cap, in bytes.
    pub const fn cap(&self) -> usize {
        self.cap
    }
}

// SAFETY: every call is passed to the inner allocator unchanged, except that
// some allocations fail (null), which `GlobalAlloc` allows.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CappedAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size(), self.cap) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { self.inner.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size(), self.cap) {
            return std::ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `inner`.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refused(new_size, self.cap) {
            return std::ptr::null_mut();
        }
        // SAFETY: as above; the old block stays valid when this fails.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}
