//! `kurir admin …`: operator commands run against the configured backends.

use kurir_queue::TopicSpec;

use crate::config::Config;
use crate::roles;

/// Creates the queue's topics that are missing (mail, every retry tier, events) with the
/// configured partition counts; existing topics are left as they are. Returns the topics.
pub async fn init_topics(config: &Config) -> anyhow::Result<Vec<TopicSpec>> {
    roles::open_queue(config).await?.close().await;
    Ok(config.queue.topic_specs())
}
