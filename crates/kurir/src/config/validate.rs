//! Cross-field and range checks that serde cannot express, run before any port is bound.

use std::time::Duration;

use super::{Config, ConfigError};

/// The shortest grace period: less cannot even close an SMTP session politely.
pub const MIN_GRACE_PERIOD: Duration = Duration::from_secs(1);
/// The longest grace period: beyond an hour a stuck drain is a bug, not patience.
pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(3600);

impl Config {
    /// Checks what deserialisation cannot; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_dns_label(&self.node.id) {
            return Err(ConfigError::key(
                "node.id",
                format!(
                    "{:?} is not a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-')",
                    self.node.id
                ),
            ));
        }
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::key("node.data_dir", "must not be empty"));
        }
        self.log
            .validate()
            .map_err(|e| ConfigError::key("log.level", e.to_string()))?;
        self.queue
            .validate()
            .map_err(|e| ConfigError::key(format!("queue.{}", e.key), e.message))?;
        self.state
            .validate()
            .map_err(|e| ConfigError::key(format!("state.{}", e.key), e.message))?;
        self.smtp
            .validate()
            .map_err(|e| ConfigError::key(format!("smtp.{}", e.key), e.message))?;
        self.grpc
            .validate()
            .map_err(|e| ConfigError::key(format!("grpc.{}", e.key), e.message))?;
        self.deliver
            .validate()
            .map_err(|e| ConfigError::key(format!("deliver.{}", e.key), e.message))?;
        self.validate_across_sections()?;
        let grace = self.lifecycle.grace_period;
        if !(MIN_GRACE_PERIOD..=MAX_GRACE_PERIOD).contains(&grace) {
            return Err(ConfigError::key(
                "lifecycle.grace_period",
                format!(
                    "{} is out of range: must be between {} and {}",
                    humantime::format_duration(grace),
                    humantime::format_duration(MIN_GRACE_PERIOD),
                    humantime::format_duration(MAX_GRACE_PERIOD),
                ),
            ));
        }
        Ok(())
    }
}

/// librdkafka's default `message.max.bytes`.
const KAFKA_DEFAULT_MAX_MESSAGE: usize = 1_000_000;
/// Room for the record's envelope and headers around the message body.
const RECORD_OVERHEAD: usize = 64 * 1024;

impl Config {
    /// Settings that follow from others unless the operator set them: the Kafka producer's
    /// `message.max.bytes` is made large enough for the largest message SMTP accepts (the
    /// broker's and topics' limits must allow it too; see docs/configuration.md).
    pub fn derive_settings(&mut self) {
        if self.queue.backend == kurir_queue::config::Backend::Kafka {
            let needed = self.smtp.limits.max_message_size + RECORD_OVERHEAD;
            self.queue
                .kafka
                .properties
                .entry("message.max.bytes".to_owned())
                .or_insert_with(|| needed.max(KAFKA_DEFAULT_MAX_MESSAGE).to_string());
        }
    }

    /// Checks between sections: tenants SMTP users and gRPC API keys act for must exist, and
    /// with Kafka the largest message SMTP accepts must fit a Kafka record.
    fn validate_across_sections(&self) -> Result<(), ConfigError> {
        let known = |t: &str| self.state.tenants.iter().any(|k| k == t);
        if !known(&self.smtp.default_tenant) {
            return Err(ConfigError::key(
                "smtp.default_tenant",
                "is not one of state.tenants",
            ));
        }
        if let Some((i, user)) = self
            .smtp
            .auth
            .users
            .iter()
            .enumerate()
            .find(|(_, u)| !known(&u.tenant))
        {
            return Err(ConfigError::key(
                format!("smtp.auth.users[{i}].tenant"),
                format!("{:?} is not one of state.tenants", user.tenant),
            ));
        }
        if let Some((i, key)) = self
            .grpc
            .api_keys
            .iter()
            .enumerate()
            .find(|(_, k)| !known(&k.tenant))
        {
            return Err(ConfigError::key(
                format!("grpc.api_keys[{i}].tenant"),
                format!("{:?} is not one of state.tenants", key.tenant),
            ));
        }
        if self.queue.backend == kurir_queue::config::Backend::Kafka {
            let limit = self
                .queue
                .kafka
                .properties
                .get("message.max.bytes")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(KAFKA_DEFAULT_MAX_MESSAGE);
            if self.smtp.limits.max_message_size + RECORD_OVERHEAD > limit {
                return Err(ConfigError::key(
                    "smtp.limits.max_message_size",
                    format!(
                        "{} bytes plus record overhead does not fit the Kafka producer's message.max.bytes ({limit}): \
                         set queue.kafka.properties.\"message.max.bytes\" (and the broker's limits) or lower this",
                        self.smtp.limits.max_message_size
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A lower-case RFC 1123 label: what Kubernetes accepts as a pod name segment.
pub(super) fn is_dns_label(s: &str) -> bool {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    (1..=63).contains(&s.len())
        && s.chars().all(allowed)
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["kurir-0", "a", "kurir-deliver-7c9f-abc12", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Kurir", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    /// A valid API key for `tenant`.
    fn api_key(tenant: &str) -> kurir_submit::grpc::ApiKeyConfig {
        kurir_submit::grpc::ApiKeyConfig {
            name: "ops".into(),
            sha256: "0".repeat(64),
            tenant: tenant.into(),
            services: vec![kurir_submit::grpc::ApiService::Admin],
            rate_per_second: 0.0,
        }
    }

    /// Makes one key of a valid config invalid.
    type Breaker = fn(&mut Config);

    #[test]
    fn each_check_names_its_key() {
        let cases: [(&str, Breaker); 7] = [
            ("node.id", |c| c.node.id = "Bad_Id".into()),
            ("node.data_dir", |c| c.node.data_dir = "".into()),
            ("log.level", |c| c.log.level = "loud".into()),
            ("lifecycle.grace_period", |c| {
                c.lifecycle.grace_period = Duration::from_millis(500)
            }),
            ("grpc.stream_window", |c| c.grpc.stream_window = 0),
            ("grpc.api_keys[0].sha256", |c| {
                c.grpc.api_keys = vec![api_key("default")];
                c.grpc.api_keys[0].sha256 = "not hex".into();
            }),
            ("grpc.api_keys[1].tenant", |c| {
                c.grpc.api_keys = vec![api_key("default"), api_key("nobody")];
                c.grpc.api_keys[1].name = "other".into();
            }),
        ];
        for (key, break_it) in cases {
            let mut config = Config::default();
            break_it(&mut config);
            let err = config.validate().unwrap_err();
            assert!(
                matches!(&err, ConfigError::Key { key: k, .. } if k == key),
                "{err}"
            );
        }
        let mut long = Config::default();
        long.lifecycle.grace_period = Duration::from_secs(7200);
        assert!(
            long.validate()
                .unwrap_err()
                .to_string()
                .contains("between 1s and 1h")
        );
    }
}
