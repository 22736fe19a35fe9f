//! Models as data (work in progress).
