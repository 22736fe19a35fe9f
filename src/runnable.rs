//! [`RunnableGraph`]: a source connected to a sink, ready to run.

use futures::future::BoxFuture;

/// A closed graph: a source connected to a sink. [`run`](RunnableGraph::run)
/// starts it and returns the materialized value.
#[must_use = "a RunnableGraph does nothing until it is run"]
pub struct RunnableGraph<M> {
    driver: BoxFuture<'static, ()>,
    mat: M,
}

impl<M> std::fmt::Debug for RunnableGraph<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnableGraph").finish_non_exhaustive()
    }
}

impl<M> RunnableGraph<M> {
    pub(crate) fn new(driver: BoxFuture<'static, ()>, mat: M) -> Self {
        RunnableGraph { driver, mat }
    }

    /// Spawns the graph on the current tokio runtime and returns its
    /// materialized value.
    ///
    /// # Panics
    /// Outside a tokio runtime (as `tokio::spawn` does). Use
    /// [`into_parts`](RunnableGraph::into_parts) to drive the graph yourself.
    pub fn run(self) -> M {
        tokio::spawn(self.driver);
        self.mat
    }

    /// The materialized value and the future that drives the graph, for running
    /// it on an executor of your choice (or inline with `.await`).
    pub fn into_parts(self) -> (M, BoxFuture<'static, ()>) {
        (self.mat, self.driver)
    }

    /// Transforms the materialized value.
    pub fn map_materialized_value<M2>(self, f: impl FnOnce(M) -> M2) -> RunnableGraph<M2> {
        RunnableGraph {
            driver: self.driver,
            mat: f(self.mat),
        }
    }
}
