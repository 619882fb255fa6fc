//! From the parsed TOML table to a [`FileConfig`], collecting every type error.
//!
//! serde stops at the first error, so [`file_config`] deserializes in rounds: it
//! records the error of each round as a [`Problem`] at its key path, patches the
//! working table so that the same error cannot come back (an unknown key is
//! removed; a wrong or missing value is replaced by a placeholder the schema
//! accepts) and tries again. The patched paths are kept so that what follows
//! from a placeholder (a second serde error, or a problem `validate` finds in
//! the placeholder) is not reported as a problem of its own.

use serde_path_to_error::Segment;

use super::error::{KeyPath, Problem, Seg};
use super::file::FileConfig;

/// Deserialization rounds before the rest of the file is given up on. Each
/// round finds one problem or tries one placeholder; a few placeholders are
/// tried per bad value, so this is room for several dozen problems.
const MAX_ROUNDS: usize = 256;

/// What deserializing found.
#[derive(Debug)]
pub(super) struct Outcome {
    /// The config, when every problem could be patched over.
    pub config: Option<FileConfig>,
    /// Every serde error, in the order found.
    pub problems: Vec<Problem>,
    /// Paths removed or replaced by a placeholder; problems at or below them
    /// are follow-ons of a problem already in `problems`.
    patched: Vec<KeyPath>,
}

impl Outcome {
    /// Whether a problem at `path` follows from a problem already reported.
    pub(super) fn covers(&self, path: &KeyPath) -> bool {
        covered(&self.patched, path)
    }
}

fn covered(patched: &[KeyPath], path: &KeyPath) -> bool {
    patched.iter().any(|p| path.starts_with(p))
}

/// How one serde error is patched over.
enum Fix {
    /// An unknown key: drop it.
    Remove(KeyPath),
    /// A wrong or missing value: put a placeholder there.
    Fill(KeyPath),
}

/// Deserializes `table` into a [`FileConfig`], reporting every type error.
pub(super) fn file_config(mut table: toml::Table) -> Outcome {
    let mut problems = Vec::new();
    let mut patched = Vec::new();
    replace_datetimes(&mut table, &mut problems, &mut patched);
    // Placeholders tried so far, per path.
    let mut tried: Vec<(KeyPath, usize)> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let value = toml::Value::Table(table.clone());
        let err = match serde_path_to_error::deserialize::<_, FileConfig>(value) {
            Ok(config) => {
                return Outcome {
                    config: Some(config),
                    problems,
                    patched,
                }
            }
            Err(e) => e,
        };
        let (path, complete) = key_path(err.path());
        let message = message(err.inner());
        let fix = if let Some(field) = quoted_after(&message, "unknown field `") {
            match path.0.last() {
                Some(Seg::Key(k)) if k == field => Fix::Remove(path.clone()),
                _ => Fix::Remove(path.key(field)),
            }
        } else if let Some(field) = quoted_after(&message, "missing field `") {
            Fix::Fill(path.key(field))
        } else {
            Fix::Fill(path.clone())
        };
        let target = match &fix {
            Fix::Remove(t) | Fix::Fill(t) => t.clone(),
        };
        if !covered(&patched, &target) {
            problems.push(Problem::new(path, message));
        }
        if !complete {
            break;
        }
        let progressed = match fix {
            Fix::Remove(t) => remove(&mut table, &t),
            Fix::Fill(t) => fill(&mut table, t, &mut tried, &mut patched),
        };
        if !progressed {
            break;
        }
        if !patched.contains(&target) {
            patched.push(target);
        }
    }
    Outcome {
        config: None,
        problems,
        patched,
    }
}

/// The key path of a serde error, and whether it is complete (it names no
/// step serde could not describe).
fn key_path(path: &serde_path_to_error::Path) -> (KeyPath, bool) {
    let mut out = KeyPath::default();
    for seg in path.iter() {
        match seg {
            Segment::Map { key } => out.0.push(Seg::Key(key.clone())),
            Segment::Seq { index } => out.0.push(Seg::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => return (out, false),
        }
    }
    (out, true)
}

/// The message of a deserialization error, never empty.
fn message(e: &toml::de::Error) -> String {
    match e.message() {
        "" => e
            .to_string()
            .lines()
            .next()
            .filter(|l| !l.trim().is_empty())
            .unwrap_or("invalid value")
            .to_string(),
        m => m.to_string(),
    }
}

/// The text between `prefix` and the next backquote, when `message` starts so.
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// Values tried in place of a wrong or missing one, in order, until the schema
/// accepts one. The schema has strings, lists, tables, integers, booleans and
/// numbers.
fn placeholder(n: usize) -> Option<toml::Value> {
    use toml::Value;
    Some(match n {
        0 => Value::String(String::new()),
        1 => Value::Array(Vec::new()),
        2 => Value::Table(toml::Table::new()),
        3 => Value::Integer(1),
        4 => Value::Boolean(false),
        5 => Value::Float(1.0),
        _ => return None,
    })
}

/// Puts the next untried placeholder at `path`; when none is left, patches the
/// table or list that holds it instead. Returns whether anything changed.
fn fill(
    table: &mut toml::Table,
    path: KeyPath,
    tried: &mut Vec<(KeyPath, usize)>,
    patched: &mut Vec<KeyPath>,
) -> bool {
    let n = match tried.iter_mut().find(|(p, _)| *p == path) {
        Some((_, n)) => {
            *n += 1;
            *n
        }
        None => {
            tried.push((path.clone(), 0));
            0
        }
    };
    match placeholder(n) {
        Some(value) => set(table, &path, value),
        None => match path.parent().filter(|p| !p.0.is_empty()) {
            Some(parent) => {
                if !patched.contains(&parent) {
                    patched.push(parent.clone());
                }
                fill(table, parent, tried, patched)
            }
            None => false,
        },
    }
}

/// The value at `path`, when it exists.
fn get_mut<'t>(table: &'t mut toml::Table, path: &[Seg]) -> Option<&'t mut toml::Value> {
    let (first, rest) = path.split_first()?;
    let Seg::Key(k) = first else { return None };
    let mut value = table.get_mut(k)?;
    for seg in rest {
        value = match (seg, value) {
            (Seg::Key(k), toml::Value::Table(t)) => t.get_mut(k)?,
            (Seg::Index(i), toml::Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Sets the value at `path` (a missing last key is added). Returns whether the
/// place exists.
fn set(table: &mut toml::Table, path: &KeyPath, value: toml::Value) -> bool {
    let Some((last, parent)) = path.0.split_last() else {
        return false;
    };
    let holder = if parent.is_empty() {
        None
    } else {
        match get_mut(table, parent) {
            Some(v) => Some(v),
            None => return false,
        }
    };
    match (last, holder) {
        (Seg::Key(k), None) => {
            table.insert(k.clone(), value);
            true
        }
        (Seg::Key(k), Some(toml::Value::Table(t))) => {
            t.insert(k.clone(), value);
            true
        }
        (Seg::Index(i), Some(toml::Value::Array(a))) => match a.get_mut(*i) {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// Removes the key at `path`. Returns whether it was there.
fn remove(table: &mut toml::Table, path: &KeyPath) -> bool {
    let Some((Seg::Key(k), parent)) = path.0.split_last() else {
        return false;
    };
    if parent.is_empty() {
        return table.remove(k).is_some();
    }
    match get_mut(table, parent) {
        Some(toml::Value::Table(t)) => t.remove(k).is_some(),
        _ => false,
    }
}

/// No key takes a date-time: each one is a problem, and is replaced by its text
/// so that the rest of its table is still checked.
fn replace_datetimes(
    table: &mut toml::Table,
    problems: &mut Vec<Problem>,
    patched: &mut Vec<KeyPath>,
) {
    for (k, v) in table.iter_mut() {
        replace_in(v, KeyPath::default().key(k), problems, patched);
    }
}

fn replace_in(
    value: &mut toml::Value,
    path: KeyPath,
    problems: &mut Vec<Problem>,
    patched: &mut Vec<KeyPath>,
) {
    match value {
        toml::Value::Datetime(dt) => {
            problems.push(Problem::new(
                path.clone(),
                "a date-time is not valid here (quote it if you meant a string)",
            ));
            *value = toml::Value::String(dt.to_string());
            patched.push(path);
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                replace_in(v, path.key(k), problems, patched);
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                replace_in(v, path.index(i), problems, patched);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(text: &str) -> Outcome {
        file_config(toml::from_str(text).unwrap())
    }

    fn paths(o: &Outcome) -> Vec<String> {
        o.problems.iter().map(|p| p.path.to_string()).collect()
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_all_found() {
        let o = outcome(
            "[server]\nthreds = 2\nthreads = \"two\"\n\n[upstream.api]\nservers = [\"a\", 5]\nretrys = 3\n",
        );
        assert_eq!(
            paths(&o),
            [
                "server.threads",
                "server.threds",
                "upstream.api.retrys",
                "upstream.api.servers[1]"
            ]
        );
        assert!(o.config.is_some());
        assert!(o.covers(&KeyPath::of(&["server", "threads"])));
        assert!(!o.covers(&KeyPath::of(&["server", "grace_period"])));
    }

    #[test]
    fn a_missing_required_key_is_reported_once() {
        let o = outcome("[rate_limit.a]\nburst = 3\n\n[rate_limit.b]\nrate = \"fast\"\n");
        assert_eq!(paths(&o), ["rate_limit.a", "rate_limit.b.rate"]);
        assert!(o.problems[0].message.contains("missing field `rate`"));
        assert!(o.config.is_some());
    }

    #[test]
    fn a_table_of_the_wrong_shape_is_reported_once() {
        let o = outcome("route = [1, 2]\nupstream = 5\n");
        assert_eq!(paths(&o), ["route[0]", "route[1]", "upstream"]);
        assert!(o.config.is_some());
    }

    #[test]
    fn date_times_are_reported() {
        let o = outcome("[server]\npid_file = 1979-05-27T07:32:00Z\nthreads = 1979-05-27\n");
        assert_eq!(paths(&o), ["server.pid_file", "server.threads"]);
        assert!(o.config.is_some());
    }
}
