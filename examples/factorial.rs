//! The quickstart: factorials of 0..=10 with a big-integer `scan`.
//!
//! ```text
//! cargo run --example factorial
//! ```

use flowstage::prelude::*;
use num_bigint::BigUint;

#[tokio::main]
async fn main() -> Result<(), StreamError> {
    Source::from_iter(1..=10u32)
        .scan(BigUint::from(1u32), |acc, n| acc * n)
        .run_with(Sink::foreach(|factorial| println!("{factorial}")))
        .await
}
