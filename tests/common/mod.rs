//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

/// Lets every task on the (paused-clock, current-thread) test runtime run
/// until all of them are idle.
///
/// With `start_paused = true`, tokio advances its virtual clock only when no
/// task can make progress, so this sleep resolves exactly when the spawned
/// pumps, drivers and producers have nothing left to do. It is not a timing
/// assumption: no amount of real time is involved.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// The elements an overflow strategy keeps when `input` arrives at a full-size
/// buffer of `capacity` that nobody drains, and whether the buffer failed.
/// Returns (survivors, dropped count, failed).
pub fn overflow_model(
    strategy: flowstage::OverflowStrategy,
    capacity: usize,
    input: &[u32],
) -> (Vec<u32>, u64, bool) {
    use flowstage::OverflowStrategy::*;
    let mut q = std::collections::VecDeque::new();
    let mut dropped = 0u64;
    for &x in input {
        if q.len() < capacity {
            q.push_back(x);
            continue;
        }
        match strategy {
            Backpressure => unreachable!("the model is for the dropping strategies"),
            DropHead => {
                q.pop_front();
                dropped += 1;
                q.push_back(x);
            }
            DropTail => {
                q.pop_back();
                dropped += 1;
                q.push_back(x);
            }
            DropBuffer => {
                dropped += q.len() as u64;
                q.clear();
                q.push_back(x);
            }
            DropNew => dropped += 1,
            Fail => return (q.into_iter().collect(), dropped, true),
        }
    }
    (q.into_iter().collect(), dropped, false)
}
