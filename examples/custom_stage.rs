//! A custom two-input stage with explicit pull/push: the shape of the
//! model-serving stage, with a "scale factor" standing in for the model.
//!
//! The control inlet (new scale factors) is always pulled, so updates never
//! wait behind data; the data inlet is pulled only when downstream asks for a
//! result, so the stage never breaks backpressure. A timer reports how many
//! elements each factor scaled.
//!
//! ```text
//! cargo run --example custom_stage
//! ```

use std::time::Duration;

use flowstage::prelude::*;
use flowstage::stage::*;

/// Scales each data element by the latest factor from the control input.
struct Scaler {
    factors: Inlet<u64>,
    data: Inlet<u64>,
    out: Outlet<String>,
    factor: u64,
    scaled_with_current: u64,
}

const REPORT: u64 = 1;

impl GraphStageLogic for Scaler {
    type Event = ();

    fn pre_start(&mut self, ctx: &mut StageContext<'_, ()>) -> Result<(), StreamError> {
        ctx.schedule_periodically(REPORT, Duration::from_millis(20));
        ctx.pull(self.factors)
    }

    fn on_push(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        inlet: InletId,
    ) -> Result<(), StreamError> {
        if self.factors == inlet {
            let f = ctx.grab(self.factors)?;
            println!(
                "-- factor {} -> {f} after {} elements",
                self.factor, self.scaled_with_current
            );
            self.factor = f;
            self.scaled_with_current = 0;
            return ctx.pull(self.factors);
        }
        let x = ctx.grab(self.data)?;
        self.scaled_with_current += 1;
        // Pushing is only allowed because on_pull pulled `data` for this outlet:
        // a push without demand would be a StreamError::Protocol, not a hidden buffer.
        ctx.push(
            self.out,
            format!("{x} x {} = {}", self.factor, x * self.factor),
        )
    }

    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        ctx.pull(self.data)
    }

    fn on_upstream_finish(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        inlet: InletId,
    ) -> Result<(), StreamError> {
        if self.data == inlet {
            ctx.complete_stage();
        }
        Ok(())
    }

    fn on_timer(&mut self, _ctx: &mut StageContext<'_, ()>, _key: u64) -> Result<(), StreamError> {
        println!(
            "-- report: factor {} used {} times so far",
            self.factor, self.scaled_with_current
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), StreamError> {
    let mut b = GraphStageBuilder::new();
    // A new factor every 25 ms; one data element every 5 ms.
    let factors =
        b.add_inlet(Source::from_iter([2u64, 3, 10]).throttle(1, Duration::from_millis(25), 1));
    let data = b.add_inlet(Source::from_iter(1..=20u64).throttle(1, Duration::from_millis(5), 1));
    let out = b.add_outlet();
    let mut outlets = b.build_active(Scaler {
        factors,
        data,
        out,
        factor: 1,
        scaled_with_current: 0,
    });
    outlets
        .source(out)?
        .run_with(Sink::foreach(|line| println!("{line}")))
        .await
}
