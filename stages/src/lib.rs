//! Ready-made stages (work in progress).
