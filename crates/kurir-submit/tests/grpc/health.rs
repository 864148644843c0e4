//! Health (SERVING, then NOT_SERVING once shutdown begins), reflection, and the drain.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::harness::{Harness, SUBMIT_KEY, message, raw};

const SERVICES: [&str; 4] = [
    "",
    "kurir.v1.SubmissionService",
    "kurir.v1.SuppressionService",
    "kurir.v1.AdminService",
];

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

fn status(response: &HealthCheckResponse) -> ServingStatus {
    ServingStatus::try_from(response.status).unwrap()
}

/// Every service is SERVING while the node runs; once shutdown begins a watcher sees
/// NOT_SERVING, and `serve` returns even though that watch is still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_until_shutdown_begins() {
    let mut h = Harness::start().await;
    let mut health = HealthClient::new(h.channel.clone());
    for service in SERVICES {
        let response = health.check(check(service)).await.unwrap().into_inner();
        assert_eq!(status(&response), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health.check(check("kurir.v1.Nope")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let mut watches = Vec::new();
    for service in ["", "kurir.v1.SubmissionService"] {
        let mut watch = health.watch(check(service)).await.unwrap().into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(status(&first), ServingStatus::Serving);
        watches.push(watch);
    }
    h.lifecycle.shutdown();
    for watch in &mut watches {
        let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("a status change")
            .unwrap()
            .unwrap();
        assert_eq!(status(&next), ServingStatus::NotServing);
    }
    h.shutdown().await.unwrap();
}

/// Reflection lists our three services and health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    let h = Harness::start().await;
    let mut reflection = ServerReflectionClient::new(h.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for service in &SERVICES[1..] {
        assert!(names.contains(service), "{service} missing from {names:?}");
    }
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    // And describes them.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "kurir.v1.SubmissionService".into(),
        )),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    assert!(
        matches!(
            response.message_response,
            Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()
        ),
        "{response:?}"
    );
}

/// A stream in flight is a lifecycle activity: the drain waits for it; once shutdown begins
/// the stream stops reading, ends with UNAVAILABLE, the drain completes, `serve` returns,
/// and new calls are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_waits_for_a_stream_and_ends_it() {
    let mut h = Harness::start().await;
    let (tx, rx) = mpsc::channel(4);
    let mut client = h.submission(SUBMIT_KEY);
    let mut responses = client
        .submit_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(raw("", &["a@drain.test"], &message("one")))
        .await
        .unwrap();
    let first = responses.message().await.unwrap().unwrap();
    assert!(first.error.is_none(), "{first:?}");
    assert_eq!(h.lifecycle.in_flight_by_name(), [("grpc", 1)]);

    h.lifecycle.shutdown();
    let end = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("the stream ends");
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let report = h.lifecycle.drain(Duration::from_secs(10)).await;
    assert!(report.is_complete(), "{report:?}");
    h.shutdown().await.unwrap();

    let refused = client
        .submit(raw("", &["b@drain.test"], &message("late")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    drop(tx);
}
