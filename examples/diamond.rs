//! A non-linear graph: broadcast into two flows, then zip them back together,
//! next to the same fan-out balanced over two workers and merged.
//!
//! ```text
//! cargo run --example diamond
//! ```
//!
//! ```text
//!            ┌─ map(x * x) ──┐
//! 1..=10 ──► broadcast       zip ──► "x² + x³"
//!            └─ map(x * x * x)┘
//! ```

use flowstage::prelude::*;

#[tokio::main]
async fn main() -> Result<(), StreamError> {
    // The diamond: every element goes down both branches; zip pairs them again.
    let [squares, cubes] = Source::from_iter(1..=10u64).broadcast2();
    squares
        .map(|x| x * x)
        .zip_with(cubes.map(|x| x * x * x), |s, c| (s, c))
        .run_with(Sink::foreach(|(s, c)| {
            println!("{s:>4} + {c:>5} = {}", s + c)
        }))
        .await?;

    // Balance: each element goes to whichever worker asks first; merge joins them.
    let mut workers = Source::from_iter(1..=1000u64).balance(2).into_iter();
    let (Some(a), Some(b)) = (workers.next(), workers.next()) else {
        return Err(StreamError::msg("balance(2) yields two outputs"));
    };
    let total = a
        .map(|x| x * 2)
        .merge(b.map(|x| x * 2))
        .run_with(Sink::fold(0u64, |acc, x| acc + x))
        .await?;
    println!("sum of 2x over 1..=1000 via two balanced workers: {total}");
    Ok(())
}
