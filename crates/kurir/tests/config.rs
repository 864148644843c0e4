//! Loading the configuration: defaults, errors that name the key or variable, overrides,
//! and the documentation staying in step with the structs.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::time::Duration;

use kurir::EXAMPLE_CONFIG;
use kurir::config::{Config, ConfigError};
use toml::{Table, Value};

fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml(text, None, env(vars))
}

fn error(text: &str, vars: &[(&str, &str)]) -> String {
    load(text, vars)
        .expect_err("config must be rejected")
        .to_string()
}

#[test]
fn no_file_means_every_default() {
    let config = Config::load(None, env(&[])).expect("defaults are valid");
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(config.lifecycle.grace_period, Duration::from_secs(30));
    assert_eq!(config.log.level, "info");
    assert_eq!(config.node.data_dir.to_str(), Some("./data"));
    assert!(!config.node.id.is_empty());
}

#[test]
fn a_partial_file_keeps_the_other_defaults() {
    let config = load("[http]\nlisten = \"0.0.0.0:9999\"\n", &[]).unwrap();
    assert_eq!(config.http.listen.to_string(), "0.0.0.0:9999");
    assert_eq!(config.lifecycle.grace_period, Duration::from_secs(30));
}

#[test]
fn errors_name_the_key() {
    let cases = [
        (
            "[http]\nlisten = \"nope\"",
            "config error at http.listen: invalid socket address syntax",
        ),
        (
            "[http]\nlistn = \"x\"",
            "config error at http.listn: unknown field `listn`",
        ),
        (
            "[pop3]\nport = 110",
            "config error at pop3: unknown field `pop3`",
        ),
        (
            "[lifecycle]\ngrace_period = 5",
            "config error at lifecycle.grace_period: invalid type",
        ),
        (
            "[log]\nformat = \"xml\"",
            "config error at log.format: unknown variant `xml`",
        ),
        (
            "[log]\nlevel = \"loud\"",
            "config error at log.level: invalid log level",
        ),
        (
            "[node]\nid = \"Node_1\"",
            "config error at node.id: \"Node_1\" is not a DNS label",
        ),
        (
            "[lifecycle]\ngrace_period = \"2h\"",
            "config error at lifecycle.grace_period: 2h is out of range",
        ),
    ];
    for (text, expected) in cases {
        let message = error(text, &[]);
        assert!(message.starts_with(expected), "{text:?}: {message}");
    }
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    let err = Config::from_toml("[http\n", Some("/etc/kurir.toml".as_ref()), env(&[]));
    let message = err.unwrap_err().to_string();
    assert!(
        message.contains("/etc/kurir.toml is not valid TOML"),
        "{message}"
    );
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let err = Config::load(Some("/nonexistent/kurir.toml".as_ref()), env(&[])).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/kurir.toml"), "{err}");
}

#[test]
fn environment_overrides_the_file() {
    let file = "[http]\nlisten = \"127.0.0.1:1\"\n[node]\nid = \"from-file\"\n";
    let vars = [
        ("KURIR__HTTP__LISTEN", "0.0.0.0:9090"),
        ("KURIR__LIFECYCLE__GRACE_PERIOD", "45s"),
        ("KURIR__LOG__FORMAT", "json"),
        ("KURIR_CONFIG", "/not/an/override"),
    ];
    let config = load(file, &vars).unwrap();
    assert_eq!(config.http.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(config.lifecycle.grace_period, Duration::from_secs(45));
    assert_eq!(config.log.format, kurir_telemetry::LogFormat::Json);
    assert_eq!(config.node.id, "from-file");
}

#[test]
fn bad_overrides_name_the_variable() {
    let cases = [
        (
            ("KURIR__HTTP__LISTEN", "nope"),
            "KURIR__HTTP__LISTEN: http.listen: invalid socket address",
        ),
        (
            ("KURIR__HTTP__LISTN", "x"),
            "KURIR__HTTP__LISTN: http.listn: unknown field `listn`",
        ),
        (
            ("KURIR__POP3__PORT", "110"),
            "KURIR__POP3__PORT: pop3.port: unknown field `pop3`",
        ),
        (
            ("KURIR__LIFECYCLE__GRACE_PERIOD", "0s"),
            "KURIR__LIFECYCLE__GRACE_PERIOD: lifecycle.grace_period: 0s is out of range",
        ),
        (
            ("KURIR__NODE__ID", "123"),
            "KURIR__NODE__ID: node.id: invalid type: integer",
        ),
        (
            ("KURIR__HTTP", "x"),
            "KURIR__HTTP: expected KURIR__SECTION__KEY",
        ),
    ];
    for (var, expected) in cases {
        let message = error("", &[var]);
        let expected = format!("config error in environment variable {expected}");
        assert!(message.starts_with(&expected), "{var:?}: {message}");
    }
}

#[test]
fn the_example_file_is_valid() {
    let config = load(EXAMPLE_CONFIG, &[]).expect("the example validates");
    assert_eq!(config.node.id, "kurir-0");
}

/// Every `section.key` of a table, dotted.
fn keys(table: &Table) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (section, value) in table {
        match value {
            Value::Table(inner) => {
                out.extend(keys(inner).into_iter().map(|k| format!("{section}.{k}")))
            }
            _ => {
                out.insert(section.clone());
            }
        }
    }
    out
}

#[test]
fn the_example_sets_every_key_and_only_known_keys() {
    let defaults = Table::try_from(Config::default()).expect("config serialises");
    let example: Table = EXAMPLE_CONFIG.parse().expect("example is TOML");
    assert_eq!(keys(&example), keys(&defaults));
}

#[test]
fn every_key_is_documented() {
    let reference = include_str!("../../../docs/configuration.md");
    let defaults = Table::try_from(Config::default()).expect("config serialises");
    for key in keys(&defaults) {
        let row = format!("| `{key}` |");
        assert!(
            reference.contains(&row),
            "{key} has no row in docs/configuration.md"
        );
        let var = format!("`KURIR__{}`", key.to_ascii_uppercase().replace('.', "__"));
        assert!(reference.contains(&var), "{key}: {var} not documented");
        let prose = format!("- `{key}`:");
        assert!(
            reference.contains(&prose),
            "{key} has no description in docs/configuration.md"
        );
    }
}
