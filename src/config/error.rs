//! Config errors that say where: the file, the line and column, and the key path.
//!
//! Validation collects every [`Problem`] it finds (as a key path and a message);
//! [`locate`] then looks each key path up in the parsed TOML document to attach
//! the line and column, so the validator itself never deals with byte offsets.

use std::fmt;
use std::path::{Path, PathBuf};

/// One step of a key path: a table key or an index into an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `upstream.api.health.interval` or `route[1].upstream`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The path made of the given keys.
    pub fn of(keys: &[&str]) -> Self {
        KeyPath(keys.iter().map(|k| Seg::Key((*k).to_string())).collect())
    }

    /// This path with one more key.
    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    /// This path with an array index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// The path one step up, or `None` at the top.
    pub fn parent(&self) -> Option<Self> {
        let (_, parent) = self.0.split_last()?;
        Some(KeyPath(parent.to_vec()))
    }

    /// Whether this path is `other` or lies below it.
    pub fn starts_with(&self, other: &KeyPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A problem found while validating, before it is located in the file.
#[derive(Debug, Clone)]
pub struct Problem {
    pub path: KeyPath,
    pub message: String,
}

impl Problem {
    pub fn new(path: KeyPath, message: impl Into<String>) -> Self {
        Problem {
            path,
            message: message.into(),
        }
    }
}

/// One config error, located.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The file, when the config came from one.
    pub file: Option<PathBuf>,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// The key path, empty when the error is not about one key (a syntax error).
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}", file.display())?,
            None => write!(f, "<config>")?,
        }
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one config, each located.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// A single error that is not about one key (e.g. the file cannot be read).
    pub fn single(file: Option<&Path>, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.map(Path::to_path_buf),
            position: None,
            key: String::new(),
            message: message.into(),
        }])
    }
}

/// 1-based line and column of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// Locates each problem's key path in the TOML text and returns the errors.
///
/// A path that does not exist in the document (a missing key) is located at its
/// closest existing parent, which is where the user has to add it.
pub fn locate(text: &str, file: Option<&Path>, problems: Vec<Problem>) -> ConfigErrors {
    let doc = toml_edit::ImDocument::parse(text).ok();
    let errors = problems
        .into_iter()
        .map(|p| {
            let position = doc
                .as_ref()
                .and_then(|d| span_of(d.as_item(), &p.path.0))
                .map(|offset| line_col(text, offset));
            ConfigError {
                file: file.map(Path::to_path_buf),
                position,
                key: p.path.to_string(),
                message: p.message,
            }
        })
        .collect();
    ConfigErrors(errors)
}

/// Byte offset of the deepest item of `path` that exists in the document.
fn span_of(item: &toml_edit::Item, path: &[Seg]) -> Option<usize> {
    // At the end of the path the key's own position (taken by the caller) is best.
    let (seg, rest) = path.split_first()?;
    match seg {
        Seg::Key(k) => {
            let (key, value) = item.as_table_like()?.get_key_value(k)?;
            span_of(value, rest).or(key.span().map(|s| s.start))
        }
        Seg::Index(i) => match item {
            toml_edit::Item::ArrayOfTables(tables) => {
                let table = tables.get(*i)?;
                span_in_table(table, rest).or(table.span().map(|s| s.start))
            }
            toml_edit::Item::Value(toml_edit::Value::Array(arr)) => {
                arr.get(*i)?.span().map(|s| s.start)
            }
            _ => None,
        },
    }
}

/// Like [`span_of`], for an element of an array of tables (which is no `Item`).
fn span_in_table(table: &toml_edit::Table, path: &[Seg]) -> Option<usize> {
    let (Seg::Key(k), rest) = path.split_first()? else {
        return None;
    };
    let (key, value) = table.get_key_value(k)?;
    span_of(value, rest).or(key.span().map(|s| s.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_display_like_toml() {
        let p = KeyPath::of(&["upstream", "api", "health", "interval"]);
        assert_eq!(p.to_string(), "upstream.api.health.interval");
        let r = KeyPath::of(&["route"]).index(2).key("upstream");
        assert_eq!(r.to_string(), "route[2].upstream");
    }

    #[test]
    fn locates_nested_keys_and_array_tables() {
        let text = "[server]\nthreads = 2\n\n[[route]]\nprefix = \"/\"\n\n[[route]]\nprefix = \"/api/\"\nupstream = \"x\"\n\n[upstream.api.health]\ninterval = \"2q\"\n";
        let problems = vec![
            Problem::new(KeyPath::of(&["route"]).index(1).key("upstream"), "m1"),
            Problem::new(
                KeyPath::of(&["upstream", "api", "health", "interval"]),
                "m2",
            ),
            Problem::new(KeyPath::of(&["server", "threads"]), "m3"),
        ];
        let errs = locate(text, None, problems);
        assert_eq!(errs.0[0].position, Some((9, 1)));
        assert_eq!(errs.0[1].position, Some((12, 1)));
        assert_eq!(errs.0[2].position, Some((2, 1)));
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
