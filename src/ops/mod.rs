//! The stream state machines behind the [`FlowOps`](crate::FlowOps) operators.
//!
//! One small pinned state machine per operator, in the manner of
//! futures-util. They are public so that their types can be named, but you
//! normally create them through the methods of [`FlowOps`](crate::FlowOps).

mod async_map;
mod grouping;
mod rate;
mod recover;
mod simple;
mod stateful;
mod supervised;
mod time;

pub use async_map::{InFlight, MapAsync, MapAsyncUnordered, MapAsyncWith};
pub use grouping::{Grouped, GroupedWithin, Sliding};
pub use rate::Expand;
pub use recover::Recover;
pub use simple::{Filter, FilterMap, Inspect, Log, Map, ZipWithIndex};
pub use stateful::{Drop, DropWhile, Fold, MapConcat, Reduce, Scan, Take, TakeWhile};
pub use supervised::{TryFilter, TryMap, TryScan};
pub use time::{CompletionTimeout, IdleTimeout, Throttle};
