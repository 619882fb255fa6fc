//! Configuration: `config.toml -> FileConfig -> validate -> Config`.
//!
//! [`file`] holds the serde types, [`deserialize`] reads them from the TOML
//! table while collecting every type error, [`validate`] turns them into the
//! [`model`] the rest of Gatehouse reads, with the [`defaults`] and [`units`]
//! it needs; [`error`] locates problems in the file. [`load`] and [`parse`]
//! are the entry points; [`parse`] takes the text, so tests need no files.
//! [`reload`] and [`watch`] apply a changed file to the running process.
//!
//! Adding a key: its serde field in `file.rs`, its default or bound in
//! `defaults.rs`, its field in `model.rs`, and its check in `validate/`.
//!
//! The text is parsed twice, by `toml` (values, for serde) and by `toml_edit`
//! (spans of every key, for locating problems by key path); `toml`'s own
//! spans cover only the first error, and validation problems have none.

pub mod defaults;
mod deserialize;
pub mod error;
pub mod file;
pub mod model;
pub mod units;
mod validate;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

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
///
/// Every problem is reported, sorted by position: wrong types and unknown keys
/// (see [`deserialize`]) together with what validation finds in the rest. Only
/// text that is not TOML at all stops at its first error.
pub fn parse(text: &str, file: Option<&Path>, base: &Path) -> Result<Config, ConfigErrors> {
    let table: toml::Table = toml::from_str(text).map_err(|e| syntax_error(text, file, &e))?;
    let mut outcome = deserialize::file_config(table);
    let validated = outcome.config.take().map(|f| validate::validate(f, base));
    let mut problems = std::mem::take(&mut outcome.problems);
    match validated {
        Some(Ok(config)) if problems.is_empty() => return Ok(config),
        Some(Ok(_)) | None => {}
        Some(Err(found)) => problems.extend(found.into_iter().filter(|p| !outcome.covers(&p.path))),
    }
    let mut errors = error::locate(text, file, problems);
    errors.0.sort_by_key(|e| (e.position.is_none(), e.position));
    Err(errors)
}

/// The error of text that does not parse as TOML.
fn syntax_error(text: &str, file: Option<&Path>, e: &toml::de::Error) -> ConfigErrors {
    let message = match e.message() {
        "" => e
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_string(),
        m => m.to_string(),
    };
    ConfigErrors(vec![ConfigError {
        file: file.map(Path::to_path_buf),
        position: e.span().map(|s| error::line_col(text, s.start)),
        key: String::new(),
        message,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unknown key, a bad duration and a rate that is a string: three kinds
    /// of problem found by three different steps.
    const THREE_PROBLEMS: &str = r#"[http]
listen = ["127.0.0.1:8080"]
redirect_to_https = false

[[route]]
prefix = "/"
upstream = "api"
rate_limit = "fast"

[upstream.api]
servers = ["127.0.0.1:5000"]
retrys = 3

[upstream.api.health]
interval = "soon"

[rate_limit.fast]
rate = "fast"
"#;

    #[test]
    fn every_problem_is_reported_in_one_run() {
        let errors = parse(THREE_PROBLEMS, None, Path::new("/")).unwrap_err();
        let found: Vec<_> = errors
            .0
            .iter()
            .map(|e| (e.key.as_str(), e.position))
            .collect();
        assert_eq!(
            found,
            [
                ("upstream.api.retrys", Some((12, 1))),
                ("upstream.api.health.interval", Some((15, 1))),
                ("rate_limit.fast.rate", Some((18, 1))),
            ],
            "{errors}"
        );
        assert!(errors.0[0].message.contains("unknown field `retrys`"));
        assert!(errors.0[1].message.contains("\"soon\""));
        assert!(errors.0[2].message.contains("invalid type"));
    }

    #[test]
    fn store_keys_are_checked_and_need_a_store() {
        let text = r#"[http]
listen = ["127.0.0.1:8080"]
redirect_to_https = false

[rate_limit.shared]
rate = 50
store = "http://127.0.0.1:6379"
store_timeout = "0ms"
on_store_error = "panic"
instances = 0

[rate_limit.local]
rate = 5
instances = 3
"#;
        let errors = parse(text, None, Path::new("/")).unwrap_err();
        let found: Vec<_> = errors
            .0
            .iter()
            .map(|e| (e.key.as_str(), e.position))
            .collect();
        assert_eq!(
            found,
            [
                ("rate_limit.shared.store", Some((7, 1))),
                ("rate_limit.shared.store_timeout", Some((8, 1))),
                ("rate_limit.shared.on_store_error", Some((9, 1))),
                ("rate_limit.shared.instances", Some((10, 1))),
                ("rate_limit.local.instances", Some((14, 1))),
            ],
            "{errors}"
        );
        let good = "[http]\nlisten = [\"127.0.0.1:8080\"]\nredirect_to_https = false\n[rate_limit.a]\nrate = 50\nburst = 100\nstore = \"redis://127.0.0.1:6379/2\"\non_store_error = \"deny\"\ninstances = 3\n";
        let config = parse(good, None, Path::new("/")).unwrap();
        let store = config.rate_limits["a"].store.clone().unwrap();
        assert_eq!(
            store,
            RateStore {
                url: "redis://127.0.0.1:6379/2".into(),
                timeout: defaults::DEFAULT_STORE_TIMEOUT,
                on_error: OnStoreError::Deny,
                instances: 3,
            }
        );
    }

    #[test]
    fn a_placeholder_is_not_reported_again_by_validation() {
        // `servers = 5` is replaced by an empty list, which validation would
        // report as "needs at least one address" on the same key.
        let text = "[http]\nlisten = [\"127.0.0.1:8080\"]\nredirect_to_https = false\n\n[upstream.api]\nservers = 5\n";
        let errors = parse(text, None, Path::new("/")).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].key, "upstream.api.servers");
        assert_eq!(errors.0[0].position, Some((6, 1)));
    }

    #[test]
    fn passive_health_and_websocket_keys_are_checked_where_they_are() {
        let text = "[http]\nlisten = [\"127.0.0.1:8080\"]\nredirect_to_https = false\n\n\
            [upstream.api]\nservers = [\"127.0.0.1:9000\"]\nwebsocket_idle_timeout = \"0s\"\n\n\
            [upstream.api.passive]\nconsecutive_failures = 0\nfailure_statuses = [503, 200]\n\
            eject_for = \"soon\"\nmax_ejected_percent = 101\n";
        let errors = parse(text, None, Path::new("/")).unwrap_err();
        let found: Vec<_> = errors
            .0
            .iter()
            .map(|e| (e.key.as_str(), e.position.map(|p| p.0)))
            .collect();
        for expected in [
            ("upstream.api.websocket_idle_timeout", Some(7)),
            ("upstream.api.passive.consecutive_failures", Some(10)),
            ("upstream.api.passive.failure_statuses[1]", Some(11)),
            ("upstream.api.passive.eject_for", Some(12)),
            ("upstream.api.passive.max_ejected_percent", Some(13)),
        ] {
            assert!(found.contains(&expected), "{expected:?} not in {found:?}");
        }
        let ok = "[http]\nlisten = [\"127.0.0.1:8080\"]\nredirect_to_https = false\n\n\
            [upstream.api]\nservers = [\"127.0.0.1:9000\"]\n[upstream.api.passive]\n";
        let config = parse(ok, None, Path::new("/")).unwrap();
        let api = &config.upstreams["api"];
        assert_eq!(
            api.websocket_idle_timeout,
            defaults::DEFAULT_WEBSOCKET_IDLE_TIMEOUT
        );
        let passive = api.passive.as_ref().unwrap();
        assert_eq!(passive.failure_statuses, [502, 503, 504]);
        assert_eq!(passive.consecutive_failures, 5);
        assert_eq!(passive.max_ejected_percent, 50);
    }

    #[test]
    fn a_syntax_error_stops_at_its_line() {
        let errors = parse("[server]\nthreads = 2\nx = \"1s\n", None, Path::new("/")).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].position.map(|p| p.0), Some(3));
    }

    #[test]
    fn cors_and_access_problems_are_located() {
        let text = r#"[http]
listen = ["127.0.0.1:8080"]
redirect_to_https = false

[[route]]
prefix = "/"
upstream = "api"
cors = "nope"
access = "none"

[upstream.api]
servers = ["127.0.0.1:5000"]

[cors.app]
allow_origins = ["*", "https://app.example.com/path"]
allow_credentials = true
allow_headers = ["Bad Header"]

[access.office]
allow = ["10.0.0.0/33"]
"#;
        let errors = parse(text, None, Path::new("/")).unwrap_err();
        let found: Vec<_> = errors
            .0
            .iter()
            .map(|e| (e.key.as_str(), e.position.map(|p| p.0)))
            .collect();
        assert_eq!(
            found,
            [
                ("route[0].cors", Some(8)),
                ("route[0].access", Some(9)),
                ("cors.app.allow_origins[0]", Some(15)),
                ("cors.app.allow_origins[1]", Some(15)),
                ("cors.app.allow_headers[0]", Some(17)),
                ("access.office.allow[0]", Some(20)),
            ],
            "{errors}"
        );
        assert!(errors.0[0].message.contains("no [cors.nope]"), "{errors}");
        assert!(
            errors.0[2].message.contains("allow_credentials"),
            "{errors}"
        );
        assert!(errors.0[3].message.contains("no path"), "{errors}");
    }
}
