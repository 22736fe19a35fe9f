//! Model types.

pub(crate) mod clustering;
pub(crate) mod general_regression;
pub(crate) mod knn;
pub(crate) mod mining;
pub(crate) mod naive_bayes;
pub(crate) mod neural;
pub(crate) mod regression;
pub(crate) mod ruleset;
pub(crate) mod scorecard;
pub(crate) mod svm;
pub(crate) mod tree;
