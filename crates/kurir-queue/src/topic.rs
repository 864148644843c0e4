//! Topic names and specs.

use std::time::Duration;

/// A topic to create, with its partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
}

/// The names of kurir's topics under a prefix (default `kurir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// New mail from submission: `kurir.mail`.
    pub fn mail(&self) -> String {
        format!("{}.mail", self.prefix)
    }

    /// Outcome events: `kurir.events`.
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// The retry tier for `delay`: `kurir.retry.5m`, `kurir.retry.2h`, `kurir.retry.90s`.
    pub fn retry(&self, delay: Duration) -> String {
        format!("{}.retry.{}", self.prefix, compact_duration(delay))
    }
}

/// A topic delivery nodes read, and the consumer group they read it in
/// ([`crate::QueueConfig::delivery_subscriptions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySubscription {
    pub group: String,
    pub topic: String,
}

/// A duration in its largest exact unit (`300s` → `5m`, `90s` → `90s`), so that topic names
/// stay short and made of `[a-z0-9.]` only.
pub fn compact_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let t = Topics::new("kurir");
        assert_eq!(t.mail(), "kurir.mail");
        assert_eq!(t.events(), "kurir.events");
        assert_eq!(t.retry(Duration::from_secs(300)), "kurir.retry.5m");
        assert_eq!(t.retry(Duration::from_secs(7200)), "kurir.retry.2h");
        assert_eq!(t.retry(Duration::from_secs(90)), "kurir.retry.90s");
        assert_eq!(t.retry(Duration::from_secs(86_400)), "kurir.retry.1d");
    }
}
