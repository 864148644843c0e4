//! `kurir admin …`: operator commands run against the configured backends.

use kurir_queue::config::Backend;
use kurir_queue::embedded::EmbeddedQueue;
use kurir_queue::kafka::KafkaQueue;
use kurir_queue::{Queue, TopicSpec};

use crate::config::Config;

/// Creates the queue's topics that are missing (mail, every retry tier, events) with the
/// configured partition counts; existing topics are left as they are. Returns the topics.
pub async fn init_topics(config: &Config) -> anyhow::Result<Vec<TopicSpec>> {
    let specs = config.queue.topic_specs();
    match config.queue.backend {
        Backend::Embedded => {
            let queue = EmbeddedQueue::open(&config.embedded_queue_dir(), &config.queue)?;
            let result = queue.ensure_topics(&specs).await;
            queue.close().await;
            result?;
        }
        Backend::Kafka => {
            KafkaQueue::connect(&config.queue)?
                .ensure_topics(&specs)
                .await?
        }
    }
    Ok(specs)
}
