//! Config files: the error type both binaries' configs report, and YAML
//! reading with line and column in every error.

use std::path::{Path, PathBuf};

/// Errors in the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML for this config.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong and where (line and column).
        message: String,
    },
    /// A value is invalid.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field (as in the file).
        field: String,
        /// Why.
        message: String,
    },
}

/// Reads a YAML config file; an empty file is all defaults.
pub fn read_yaml<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_yaml(&text, path)
}

/// Parses YAML config text (`path` only names it in errors).
pub fn parse_yaml<T: serde::de::DeserializeOwned + Default>(text: &str, path: &Path) -> Result<T, ConfigError> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: yaml_error(&e),
    })
}

/// A YAML error with its line and column, once.
pub fn yaml_error(e: &serde_yaml_ng::Error) -> String {
    let msg = e.to_string();
    match e.location() {
        Some(l) if !msg.contains(" line ") => format!("line {} column {}: {msg}", l.line(), l.column()),
        _ => msg,
    }
}

/// A [`ConfigError::Invalid`] for `field`.
pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}
