//! Typed errors of the model crate.

use std::path::PathBuf;

use crate::model::ModelType;

/// Everything that can go wrong loading or scoring a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A descriptor's `modeltype` is not a known value and no factory is registered for it.
    #[error("unknown model type {0}")]
    UnknownModelType(i32),
    /// No factory is registered for this model type.
    #[error("no factory registered for model type {0}")]
    NoFactory(ModelType),
    /// The model type is known but its implementation is not available yet.
    #[error("{model_type} models are not available yet: {reason}")]
    NotAvailable {
        /// The model type.
        model_type: ModelType,
        /// Why.
        reason: &'static str,
    },
    /// The model type's support was left out at compile time.
    #[error("{model_type} support is disabled (build flowstage-model with feature `{feature}`)")]
    FeatureDisabled {
        /// The model type.
        model_type: ModelType,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// A descriptor carries neither `data` nor `location`.
    #[error("model descriptor {0:?} carries neither data nor location")]
    EmptyDescriptor(String),
    /// A `location` cannot be used (escapes the models directory, absolute, `..`, ...).
    #[error("invalid model location {location:?}: {reason}")]
    InvalidLocation {
        /// The location as given.
        location: String,
        /// Why it was refused.
        reason: String,
    },
    /// A `location` was given but no models directory is configured.
    #[error("no models directory configured: cannot resolve location {0:?}")]
    NoModelsDir(String),
    /// Reading a file failed.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A model file is larger than its format allows; nothing was read.
    #[error("{path} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A protobuf message could not be decoded.
    #[error("cannot decode {what}")]
    Decode {
        /// Which message.
        what: &'static str,
        /// The cause.
        #[source]
        source: prost::DecodeError,
    },
    /// The model is malformed or unsupported.
    #[error("invalid {model_type} model: {reason}")]
    InvalidModel {
        /// The model type.
        model_type: ModelType,
        /// What is wrong.
        reason: String,
    },
    /// A record cannot be turned into the model's inputs.
    #[error("bad input: {0}")]
    Input(String),
    /// The model failed while scoring.
    #[error("scoring failed: {0}")]
    Scoring(String),
}

impl ModelError {
    /// An [`ModelError::InvalidModel`] for `model_type`.
    pub fn invalid(model_type: ModelType, reason: impl Into<String>) -> Self {
        ModelError::InvalidModel {
            model_type,
            reason: reason.into(),
        }
    }

    /// An [`ModelError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
