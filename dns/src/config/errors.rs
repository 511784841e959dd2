//! The one error of configuration loading.

/// A configuration problem, with what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("config is not valid: {0}")]
    Syntax(String),
    /// A semantic problem.
    #[error("{what}: {why}; {fix}")]
    Invalid {
        /// Which item.
        what: String,
        /// What is wrong.
        why: String,
        /// What to do.
        fix: String,
    },
}

/// A [`ConfigError::Invalid`]: which item, what is wrong, what to do.
pub(super) fn invalid(
    what: impl Into<String>,
    why: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        what: what.into(),
        why: why.into(),
        fix: fix.into(),
    }
}
