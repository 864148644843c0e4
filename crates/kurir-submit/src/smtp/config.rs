//! `[smtp]`: the submission server's configuration, checked before any port is bound.
//!
//! Every limit has a default that is safe on a public port: loopback listener, relay only
//! from loopback, AUTH only over TLS, bounded sizes, counts and timeouts. `validate` names
//! the key at fault so a bad config file fails with a message an operator can act on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
pub const RFC5321_MAX_COMMAND_LINE: usize = 512;
/// The longest command line the configuration may allow (some clients send long AUTH
/// lines or many ESMTP parameters).
pub const MAX_CONFIGURABLE_LINE: usize = 4096;

/// `[smtp]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// The name in the banner, the EHLO reply and `Received: … by`.
    pub hostname: String,
    /// What to listen on; the binary binds these, [`crate::smtp::run`] takes bound sockets.
    pub listeners: Vec<ListenerConfig>,
    /// Certificate for STARTTLS and implicit TLS. Without it STARTTLS is not offered, AUTH
    /// is therefore never offered, and `implicit_tls` listeners are refused.
    pub tls: Option<TlsConfig>,
    pub auth: AuthConfig,
    pub relay: RelayConfig,
    pub limits: LimitsConfig,
    pub timeouts: TimeoutsConfig,
    /// What happens to a suppressed recipient at RCPT.
    pub suppressed_recipients: SuppressedAction,
    /// The tenant of clients that relay by network (not authenticated).
    pub default_tenant: String,
    /// How long to wait before the banner, watching for clients that talk first (an
    /// RFC 5321 violation typical of spam bots): they get `554 5.5.0` and are dropped.
    ///
    /// Default 0: a submission server talks to known applications and relays, and a delay
    /// would add to every new connection. Even at 0 the server checks, without waiting,
    /// whether commands already arrived before it writes the banner. Set 1–5 s on a port
    /// 25 listener exposed to the internet.
    #[serde(with = "humantime_serde")]
    pub greeting_delay: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            listeners: vec![ListenerConfig::default()],
            tls: None,
            auth: AuthConfig::default(),
            relay: RelayConfig::default(),
            limits: LimitsConfig::default(),
            timeouts: TimeoutsConfig::default(),
            suppressed_recipients: SuppressedAction::default(),
            default_tenant: "default".into(),
            greeting_delay: Duration::ZERO,
        }
    }
}

/// How a listener starts its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ListenerMode {
    /// Plain text, STARTTLS offered when a certificate is configured (ports 25, 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465, RFC 8314).
    ImplicitTls,
    /// Plain text, STARTTLS never offered (and so no AUTH): for trusted local networks.
    Plain,
}

/// `[[smtp.listeners]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    #[serde(default)]
    pub mode: ListenerMode,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 2525)),
            mode: ListenerMode::Starttls,
        }
    }
}

/// `[smtp.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often a handshake may check the files' modification times; a changed pair is
    /// loaded without a restart (a bad pair is logged and the old one kept).
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(5)
}

/// `[smtp.auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub users: Vec<UserConfig>,
}

/// `[[smtp.auth.users]]`.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// PHC string, e.g. `$argon2id$v=19$m=19456,t=2,p=1$…`.
    pub password_hash: String,
    pub tenant: String,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash is not a password, but it need not reach a log either.
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// `[smtp.relay]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Clients in these networks may relay without AUTH (tenant: `default_tenant`).
    pub allowed_networks: Vec<IpNet>,
    /// Refuse MAIL from anyone not authenticated, whatever their network.
    pub require_auth: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            allowed_networks: vec![
                "127.0.0.0/8".parse().expect("valid CIDR"),
                "::1/128".parse().expect("valid CIDR"),
            ],
            require_auth: false,
        }
    }
}

/// `[smtp.limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Octets of one message (advertised as `SIZE`).
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_messages_per_connection: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Protocol errors in one session before `421 4.7.0` and close.
    pub max_errors: usize,
    /// Failed AUTH attempts from one IP within `auth_failure_window` before it is refused.
    pub max_auth_failures_per_ip: usize,
    #[serde(with = "humantime_serde")]
    pub auth_failure_window: Duration,
    /// Command line length (RFC 5321: 512); at most 4096.
    pub max_line_length: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 1000,
            max_messages_per_connection: 1000,
            max_connections: 2000,
            max_connections_per_ip: 200,
            max_errors: 10,
            max_auth_failures_per_ip: 10,
            auth_failure_window: Duration::from_secs(15 * 60),
            max_line_length: RFC5321_MAX_COMMAND_LINE,
        }
    }
}

/// `[smtp.timeouts]`: each phase ends with `421 4.4.2` and a close.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Waiting for the next command (idle).
    #[serde(with = "humantime_serde")]
    pub command: Duration,
    /// The whole body of one message (DATA) or one BDAT chunk.
    #[serde(with = "humantime_serde")]
    pub data: Duration,
    /// A TLS handshake (STARTTLS or implicit).
    #[serde(with = "humantime_serde")]
    pub tls_handshake: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            command: Duration::from_secs(60),
            data: Duration::from_secs(300),
            tls_handshake: Duration::from_secs(10),
        }
    }
}

/// `suppressed_recipients`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SuppressedAction {
    /// `550 5.7.1` at RCPT: the sender learns at once.
    #[default]
    Reject,
    /// `250` at RCPT, the recipient left out of the queued message (logged and counted).
    Drop,
}

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("smtp.{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

impl SmtpConfig {
    /// Cross-field checks (password hashes are parsed too), before anything is bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.hostname.is_empty() || self.hostname.bytes().any(|b| b <= b' ') {
            return Err(err("hostname", "must be a host name without spaces"));
        }
        self.validate_listeners()?;
        self.limits.validate()?;
        self.timeouts.validate()?;
        kurir_state::Tenant::new(&self.default_tenant)
            .map_err(|e| err("default_tenant", e.to_string()))?;
        for (i, user) in self.auth.users.iter().enumerate() {
            user.validate(i)?;
        }
        let mut names: Vec<&str> = self.auth.users.iter().map(|u| u.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(err("auth.users", format!("user {:?} appears twice", w[0])));
        }
        if self.relay.require_auth && self.auth.users.is_empty() {
            return Err(err("relay.require_auth", "no auth.users are configured"));
        }
        Ok(())
    }

    fn validate_listeners(&self) -> Result<(), ConfigError> {
        for (i, l) in self.listeners.iter().enumerate() {
            if l.mode == ListenerMode::ImplicitTls && self.tls.is_none() {
                return Err(err(
                    format!("listeners[{i}].mode"),
                    "implicit_tls needs smtp.tls (cert_file, key_file)",
                ));
            }
        }
        if let Some(tls) = &self.tls
            && tls.reload_interval.is_zero()
        {
            return Err(err("tls.reload_interval", "must be more than 0"));
        }
        Ok(())
    }
}

impl UserConfig {
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        if self.name.is_empty() || self.name.len() > 256 {
            return Err(err(format!("auth.users[{i}].name"), "must be 1-256 octets"));
        }
        argon2::PasswordHash::new(&self.password_hash).map_err(|e| {
            err(
                format!("auth.users[{i}].password_hash"),
                format!("not a PHC string: {e}"),
            )
        })?;
        kurir_state::Tenant::new(&self.tenant)
            .map_err(|e| err(format!("auth.users[{i}].tenant"), e.to_string()))?;
        Ok(())
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_message_size", self.max_message_size),
            ("max_recipients", self.max_recipients),
            (
                "max_messages_per_connection",
                self.max_messages_per_connection,
            ),
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_errors", self.max_errors),
            ("max_auth_failures_per_ip", self.max_auth_failures_per_ip),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(err(format!("limits.{key}"), "must be more than 0"));
            }
        }
        if !(RFC5321_MAX_COMMAND_LINE..=MAX_CONFIGURABLE_LINE).contains(&self.max_line_length) {
            return Err(err(
                "limits.max_line_length",
                format!("must be {RFC5321_MAX_COMMAND_LINE} to {MAX_CONFIGURABLE_LINE}"),
            ));
        }
        if self.auth_failure_window.is_zero() {
            return Err(err("limits.auth_failure_window", "must be more than 0"));
        }
        Ok(())
    }
}

impl TimeoutsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("command", self.command),
            ("data", self.data),
            ("tls_handshake", self.tls_handshake),
        ] {
            if value.is_zero() {
                return Err(err(format!("timeouts.{key}"), "must be more than 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SmtpConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_are_safe_and_valid() {
        let config = SmtpConfig::default();
        config.validate().unwrap();
        assert!(config.listeners[0].address.ip().is_loopback());
        assert_eq!(config.listeners[0].mode, ListenerMode::Starttls);
        assert_eq!(config.limits.max_line_length, 512);
        assert!(!config.relay.allowed_networks.is_empty());
        assert!(
            config
                .relay
                .allowed_networks
                .iter()
                .all(|n| n.addr().is_loopback())
        );
    }

    #[test]
    fn parses_a_full_section() {
        let config = parse(
            r#"
            hostname = "mx.example.test"
            default_tenant = "shop"
            suppressed_recipients = "drop"
            greeting_delay = "1s"
            [[listeners]]
            address = "0.0.0.0:465"
            mode = "implicit_tls"
            [tls]
            cert_file = "/etc/kurir/cert.pem"
            key_file = "/etc/kurir/key.pem"
            [relay]
            allowed_networks = ["10.0.0.0/8"]
            require_auth = false
            [limits]
            max_message_size = 1048576
            max_line_length = 1000
            [timeouts]
            command = "30s"
            data = "2m"
            [[auth.users]]
            name = "app"
            password_hash = "$argon2id$v=19$m=1024,t=1,p=1$a3VyaXJ0ZXN0c2FsdA$q9Xm5mXBqK8cY0bQ4m4nq3n0bKqvX0rS2h8kQeM9l8Q"
            tenant = "shop"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.listeners[0].mode, ListenerMode::ImplicitTls);
        assert_eq!(config.timeouts.data, Duration::from_secs(120));
        assert_eq!(config.suppressed_recipients, SuppressedAction::Drop);
        assert_eq!(config.tls.unwrap().reload_interval, Duration::from_secs(5));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = parse("[limits]\nmax_mesage_size = 1\n").unwrap_err();
        assert!(error.to_string().contains("max_mesage_size"), "{error}");
    }

    #[test]
    fn validation_names_the_key() {
        let check = |tweak: fn(&mut SmtpConfig), key: &str| {
            let mut config = SmtpConfig::default();
            tweak(&mut config);
            let error = config.validate().unwrap_err();
            assert_eq!(error.key, key, "{error}");
        };
        check(|c| c.limits.max_line_length = 100, "limits.max_line_length");
        check(
            |c| c.limits.max_line_length = 5000,
            "limits.max_line_length",
        );
        check(|c| c.limits.max_recipients = 0, "limits.max_recipients");
        check(|c| c.timeouts.command = Duration::ZERO, "timeouts.command");
        check(
            |c| c.default_tenant = "Not A Tenant".into(),
            "default_tenant",
        );
        check(|c| c.relay.require_auth = true, "relay.require_auth");
        check(
            |c| c.listeners[0].mode = ListenerMode::ImplicitTls,
            "listeners[0].mode",
        );
        check(
            |c| {
                c.auth.users.push(UserConfig {
                    name: "app".into(),
                    password_hash: "plain-text".into(),
                    tenant: "default".into(),
                })
            },
            "auth.users[0].password_hash",
        );
    }
}
