//! API keys (missing, unknown, not allowed, over their rate) and TLS, including mutual TLS.

use std::time::Duration;

use kurir_proto::v1;
use kurir_proto::v1::submission_service_client::SubmissionServiceClient;
use kurir_submit::grpc::GrpcTlsConfig;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::harness::{
    Harness, LIMITED_KEY, LIMITED_KEY_NAME, SUBMIT_KEY, SUPPRESSION_KEY, bearer, message, raw,
};

fn request() -> v1::SubmitRequest {
    raw("", &["a@auth.test"], &message("auth"))
}

/// No key or an unknown key is UNAUTHENTICATED, a key without `submission` is
/// PERMISSION_DENIED, on unary calls and streams alike, and nothing is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_need_a_known_key_for_the_service() {
    let h = Harness::start().await;
    for (key, code) in [
        ("", Code::Unauthenticated),
        ("not-a-configured-key", Code::Unauthenticated),
        (SUPPRESSION_KEY, Code::PermissionDenied),
    ] {
        let mut client = h.submission(key);
        let status = client.submit(request()).await.unwrap_err();
        assert_eq!(status.code(), code, "{key:?}: {status:?}");
        let status = client
            .submit_stream(tokio_stream::iter(vec![request()]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{key:?} (stream): {status:?}");
    }
    // A key in another scheme is no key.
    let mut plain = tonic::Request::new(request());
    plain.metadata_mut().insert(
        "authorization",
        format!("Basic {SUBMIT_KEY}").parse().unwrap(),
    );
    let status = h.submission("").submit(plain).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    h.barrier("auth.test").await;
    assert_eq!(h.mail().len(), 1, "only the barrier");
}

/// A key over its rate is RESOURCE_EXHAUSTED naming the key and the limit; on a stream each
/// request over it fails in its own response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_is_resource_exhausted() {
    let h = Harness::start().await;
    let mut client = h.submission(LIMITED_KEY);
    // One message per 5 s, burst 1: the first passes, the next ones are over the rate.
    client.submit(request()).await.unwrap();
    let status = client.submit(request()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains(LIMITED_KEY_NAME) && status.message().contains("0.2"),
        "{status:?}"
    );
    let mut responses = client
        .submit_stream(tokio_stream::iter(vec![request(), request()]))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(response) = responses.message().await.unwrap() {
        let error = response.error.expect("over the rate");
        assert_eq!(error.code, i32::from(Code::ResourceExhausted));
        n += 1;
    }
    assert_eq!(n, 2);
    // Other keys are not affected.
    h.submission(SUBMIT_KEY).submit(request()).await.unwrap();

    // The other services are charged per call, by the same limiter (already spent).
    let check = v1::CheckSuppressionsRequest {
        addresses: vec!["a@auth.test".into()],
    };
    let status = h.suppression(LIMITED_KEY).check(check).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

fn tls_endpoint(h: &Harness, identity: Option<Identity>) -> Endpoint {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(h.ca.ca_pem()))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Endpoint::from_shared(format!("https://{}", h.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
}

/// One submission over `endpoint`; any failure (handshake, call) as the error.
async fn submit_over(endpoint: Endpoint) -> Result<(), String> {
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let mut client = SubmissionServiceClient::with_interceptor(channel, bearer(SUBMIT_KEY));
    client
        .submit(request())
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

/// With `client_ca_file` only clients with a certificate from that CA get through; the
/// others (no certificate, one from another CA, plain text) never reach a call. Without it,
/// TLS alone is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_a_client_certificate_from_the_ca() {
    let h = Harness::embedded(|s| {
        s.grpc.tls = Some(GrpcTlsConfig {
            cert_file: s.cert_file.clone(),
            key_file: s.key_file.clone(),
            client_ca_file: Some(s.ca_file.clone()),
        });
    })
    .await;
    let issued = h.ca.issue(&["client.test"]);
    let identity = Identity::from_pem(&issued.chain_pem, &issued.key_pem);
    submit_over(tls_endpoint(&h, Some(identity))).await.unwrap();

    let refused = submit_over(tls_endpoint(&h, None)).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    let stranger = kurir_testkit::TestCa::new().issue(&["client.test"]);
    let identity = Identity::from_pem(&stranger.chain_pem, &stranger.key_pem);
    let refused = submit_over(tls_endpoint(&h, Some(identity))).await;
    assert!(
        refused.is_err(),
        "a certificate from another CA: {refused:?}"
    );
    let plain = submit_over(h.endpoint().connect_timeout(Duration::from_secs(10))).await;
    assert!(plain.is_err(), "plain text: {plain:?}");

    let h = Harness::embedded(|s| {
        s.grpc.tls = Some(GrpcTlsConfig {
            cert_file: s.cert_file.clone(),
            key_file: s.key_file.clone(),
            client_ca_file: None,
        });
    })
    .await;
    submit_over(tls_endpoint(&h, None)).await.unwrap();
}

/// A certificate file that is not PEM fails `GrpcServer::new`, before any port is bound.
#[tokio::test]
async fn a_bad_certificate_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let config = kurir_submit::grpc::GrpcConfig {
        tls: Some(GrpcTlsConfig {
            cert_file: cert.clone(),
            key_file: cert,
            client_ca_file: None,
        }),
        ..Default::default()
    };
    let queue =
        kurir_queue::embedded::EmbeddedQueue::open(&dir.path().join("queue"), &Default::default())
            .unwrap();
    let state = kurir_state::embedded::EmbeddedState::open(
        &dir.path().join("state"),
        &kurir_state::StateConfig::default(),
    )
    .unwrap();
    let publisher = kurir_submit::publish::Publisher::new(
        queue.clone(),
        kurir_submit::publish::PublishConfig {
            hostname: "h.test".into(),
            topic: "kurir.mail".into(),
            ack_timeout: Duration::from_secs(1),
            shards: Default::default(),
        },
    );
    let hooks = kurir_submit::grpc::AdminHooks {
        sites: None,
        delivery: Vec::new(),
        topic_specs: Vec::new(),
        max_age: Duration::from_secs(1),
    };
    let error = kurir_submit::grpc::GrpcServer::new(
        config,
        publisher,
        queue,
        state,
        hooks,
        kurir_lifecycle::Lifecycle::new(),
    )
    .unwrap_err();
    assert!(error.to_string().starts_with("grpc.tls: "), "{error}");
}
