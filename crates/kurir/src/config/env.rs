//! Environment overrides: `KURIR__SECTION__KEY=value` sets `section.key`, for the values
//! that differ per pod (node id, listen address) without templating the file.

use std::ffi::OsString;

use toml::{Table, Value};

use super::error::ConfigError;

/// Variables starting with this override config keys; `__` separates path segments.
pub const ENV_PREFIX: &str = "KURIR__";

/// An override that was applied: which variable set which key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Override {
    pub(super) var: String,
    /// Dotted and lower-cased, e.g. `http.listen`.
    pub(super) key: String,
}

/// Applies every `KURIR__…` variable in `vars` to `table`, in variable-name order so the
/// result does not depend on the environment's order.
pub(super) fn apply(
    table: &mut Table,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<Override>, ConfigError> {
    let mut relevant: Vec<(String, OsString)> = vars
        .into_iter()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value)))
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    relevant.sort();
    let mut applied: Vec<Override> = Vec::new();
    for (var, value) in relevant {
        let path = key_path(&var)?;
        let key = path.join(".");
        if let Some(earlier) = applied.iter().find(|o| o.key == key) {
            let message = format!("{key} is already set by {}", earlier.var);
            return Err(ConfigError::Env { var, message });
        }
        let Some(value) = value.to_str() else {
            let message = "the value is not valid UTF-8".to_owned();
            return Err(ConfigError::Env { var, message });
        };
        set(table, &path, parse_value(value)).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        applied.push(Override { var, key });
    }
    Ok(applied)
}

/// `KURIR__HTTP__LISTEN` → `["http", "listen"]`.
fn key_path(var: &str) -> Result<Vec<String>, ConfigError> {
    let rest = &var[ENV_PREFIX.len()..];
    let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    // One segment would replace a whole section, which is never what was meant.
    if path.len() < 2 || path.iter().any(String::is_empty) {
        let message = format!(
            "expected {ENV_PREFIX}SECTION__KEY (segments separated by a double underscore)"
        );
        return Err(ConfigError::Env {
            var: var.to_owned(),
            message,
        });
    }
    Ok(path)
}

/// A TOML value when the text is one (`30`, `true`, `"quoted"`, `[1, 2]`), else the text
/// as a string, so `127.0.0.1:9090` and `30s` need no quotes.
fn parse_value(text: &str) -> Value {
    text.parse::<Value>()
        .unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn set(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path
        .split_last()
        .expect("key_path returns two or more segments");
    let mut current = table;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(inner) => inner,
            _ => {
                let key = path[..=depth].join(".");
                return Err(format!(
                    "cannot set {}: {key} is not a table",
                    path.join(".")
                ));
            }
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn sets_nested_keys_and_parses_toml_values() {
        let mut table = Table::new();
        let env = vars(&[
            ("KURIR__HTTP__LISTEN", "0.0.0.0:9090"),
            ("KURIR__NODE__ID", "\"quoted\""),
            ("KURIR__X__N", "42"),
            ("PATH", "/bin"),
        ]);
        let applied = apply(&mut table, env).unwrap();
        assert_eq!(applied.len(), 3);
        assert_eq!(table["http"]["listen"].as_str(), Some("0.0.0.0:9090"));
        assert_eq!(table["node"]["id"].as_str(), Some("quoted"));
        assert_eq!(table["x"]["n"].as_integer(), Some(42));
    }

    #[test]
    fn rejects_a_variable_without_a_key() {
        for var in ["KURIR__HTTP", "KURIR__HTTP__", "KURIR____LISTEN"] {
            let err = apply(&mut Table::new(), vars(&[(var, "1")])).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Env { var: v, .. } if v == var),
                "{err}"
            );
        }
    }

    #[test]
    fn rejects_setting_inside_a_non_table() {
        let mut table: Table = "http = 5".parse().unwrap();
        let err = apply(&mut table, vars(&[("KURIR__HTTP__LISTEN", "x")])).unwrap_err();
        assert!(err.to_string().contains("KURIR__HTTP__LISTEN"), "{err}");
        assert!(err.to_string().contains("http is not a table"), "{err}");
    }

    #[test]
    fn rejects_two_variables_for_one_key() {
        let env = vars(&[("KURIR__HTTP__LISTEN", "a"), ("KURIR__http__listen", "b")]);
        let err = apply(&mut Table::new(), env).unwrap_err();
        assert!(err.to_string().contains("already set by"), "{err}");
    }
}
