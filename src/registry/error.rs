//! [`RegistryError`]: why a registry operation could not be done.

use crate::error::{ConfigError, PredictError};

/// A registry operation could not be done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No model of that name is deployed.
    #[error("no model named `{name}` is deployed")]
    UnknownModel {
        /// The name asked for.
        name: String,
    },
    /// The model has no version or label of that name.
    #[error("model `{name}` has no version or label `{version}`; it has versions {known:?}")]
    UnknownVersion {
        /// The model.
        name: String,
        /// The version or label asked for.
        version: String,
        /// The versions it has.
        known: Vec<String>,
    },
    /// The version exists already.
    #[error("model `{name}` already has a version `{version}`; retire it first")]
    VersionExists {
        /// The model.
        name: String,
        /// The version.
        version: String,
    },
    /// Rolling back needs a previous stable version.
    #[error("model `{name}` has no previous stable version to roll back to")]
    NothingToRollBack {
        /// The model.
        name: String,
    },
    /// The stable version cannot be retired.
    #[error(
        "version `{version}` of `{name}` is stable; promote another version before retiring it"
    )]
    RetiringStable {
        /// The model.
        name: String,
        /// The version.
        version: String,
    },
    /// A routing rule is invalid.
    #[error("invalid routing for `{name}`: {reason}")]
    InvalidRouting {
        /// The model.
        name: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A predictor deployed under a name and version it was not built for.
    #[error(
        "the predictor was built as `{predictor}`, not `{name}/{version}`; build it with .identity(\"{name}\", \"{version}\")"
    )]
    IdentityMismatch {
        /// The model.
        name: String,
        /// The version.
        version: String,
        /// The identity it was built with.
        predictor: String,
    },
    /// A version and a label would share a name, so a target could mean either.
    #[error(
        "model `{name}`: `{clash}` is {reason}; versions and labels must not share names (`stable` is always a label)"
    )]
    NameClash {
        /// The model.
        name: String,
        /// The name asked for.
        clash: String,
        /// What it clashes with.
        reason: String,
    },
    /// The version's predictor could not be started.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The prediction itself failed.
    #[error(transparent)]
    Predict(#[from] PredictError),
}
