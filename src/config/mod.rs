//! Configuration: `config.toml -> FileConfig -> validate -> Config`.
//!
//! [`file`] holds the serde types, [`runtime`] the validated model the proxy
//! reads, and [`error`] the located errors. [`load`] and [`parse`] are the entry
//! points; [`parse`] takes the text, so tests need no files.

pub mod error;
pub mod file;
pub mod runtime;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use runtime::Config;

/// Reads and validates the config file at `path`. Relative paths inside it are
/// taken from the current directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(Some(path), format!("cannot read the config file: {e}"))
    })?;
    let base = std::env::current_dir().map_err(|e| {
        ConfigErrors::single(
            Some(path),
            format!("cannot read the current directory: {e}"),
        )
    })?;
    parse(&text, Some(path), &base)
}

/// Parses and validates config text. `file` is only used in messages; relative
/// paths in the config are taken from `base`.
pub fn parse(text: &str, file: Option<&Path>, base: &Path) -> Result<Config, ConfigErrors> {
    let deserializer = toml::Deserializer::new(text);
    let parsed: file::FileConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let position = inner.span().map(|s| error::line_col(text, s.start));
        ConfigErrors(vec![ConfigError {
            file: file.map(Path::to_path_buf),
            position,
            key: if key == "." { String::new() } else { key },
            message: match inner.message() {
                "" => inner
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("invalid TOML")
                    .to_string(),
                m => m.to_string(),
            },
        }])
    })?;
    runtime::validate(parsed, base).map_err(|problems| error::locate(text, file, problems))
}
