//! `SubmissionService` over TCP: raw and structured messages on the publish path SMTP uses,
//! field-naming refusals, suppression, idempotency, streams and their flow control, and
//! queue failures. The main flows run on both backends: each is a scenario function run by
//! an embedded test and, all on one broker, by `cluster_main_flows`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use kurir_core::{Address, Outcome};
use kurir_proto::v1;
use kurir_proto::v1::submission_service_client::SubmissionServiceClient;
use kurir_proto::v1::submit_request::Message as Kind;
use kurir_queue::kafka::KafkaQueue;
use kurir_queue::{Queue, QueueConfig};
use kurir_state::embedded::EmbeddedState;
use kurir_state::{Claim, Reason, Scope, State, Suppression, Tenant};
use kurir_submit::grpc::{AdminHooks, GrpcConfig, GrpcServer};
use kurir_submit::publish::{PublishConfig, Publisher, Submission};
use kurir_testkit::wait_for;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use tokio::net::TcpListener;
use tonic::Code;

use crate::harness::{
    HOSTNAME, Harness, OTHER_TENANT_KEY, SUBMIT_KEY, TENANT, bearer, keys, message, raw,
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn queued(address: &str) -> v1::RecipientResult {
    result(address, v1::RecipientStatus::Queued)
}

fn result(address: &str, status: v1::RecipientStatus) -> v1::RecipientResult {
    v1::RecipientResult {
        address: address.into(),
        status: status.into(),
    }
}

fn recipients(q: &kurir_proto::Queued) -> Vec<String> {
    q.envelope
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Scenarios run on both backends.
// ---------------------------------------------------------------------------------------

/// A raw message with LF-only line ends and neither Message-ID nor Date is queued exactly
/// as the publish path normalises it for SMTP without a Received header: CRLF line ends,
/// Message-ID and Date added at the end of the header block, nothing else changed. A
/// message that has both is queued byte for byte.
async fn raw_message_is_normalised_like_smtp<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
) {
    let data = "From: app@shop.test\nTo: rcpt@raw.test\nSubject: raw\n\nline one\nline two\n";
    let mut request = raw(
        "bounces@shop.test",
        &["rcpt@raw.test", "Other@RAW.test"],
        data,
    );
    request.client_id = "c-1".into();
    request.tags = BTreeMap::from([("campaign".to_owned(), "spring".to_owned())]);
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    let response = h.submission(SUBMIT_KEY).submit(request).await.unwrap();
    let response = response.into_inner();
    assert_eq!(response.client_id, "c-1");
    assert!(!response.duplicate && response.error.is_none());
    assert_eq!(
        response.recipients,
        [queued("rcpt@raw.test"), queued("Other@raw.test")]
    );

    let records = h.mail_of(&response.message_id, "raw.test").await;
    assert_eq!(records.len(), 1, "one domain, one record");
    let q = &records[0];
    assert_eq!(q.tenant, TENANT);
    assert_eq!(
        q.envelope.sender.as_ref().unwrap().to_string(),
        "bounces@shop.test"
    );
    assert_eq!(recipients(q), ["rcpt@raw.test", "Other@raw.test"]);
    assert_eq!(q.tags.get("campaign").map(String::as_str), Some("spring"));
    assert_eq!(q.trace.as_ref().unwrap().traceparent, TRACEPARENT);

    // What SMTP's path makes of the same message, without the Received header.
    let smtp_like = Submission {
        tenant: TENANT.into(),
        envelope: q.envelope.clone(),
        body: Bytes::from(data.replace('\n', "\r\n")),
        received: None,
        traceparent: None,
        tags: BTreeMap::new(),
        suppressed: Vec::new(),
    };
    assert_eq!(q.body, h.publisher.normalise(q.id, &smtp_like).to_bytes());
    let text = std::str::from_utf8(&q.body).unwrap();
    let head = format!(
        "From: app@shop.test\r\nTo: rcpt@raw.test\r\nSubject: raw\r\nMessage-ID: <{}@{HOSTNAME}>\r\nDate: ",
        q.id
    );
    assert!(text.starts_with(&head), "{text}");
    assert!(text.ends_with("\r\n\r\nline one\r\nline two\r\n"), "{text}");
    assert!(!text.contains("Received:"), "{text}");

    // Complete already: not a byte changed.
    let complete = "Message-ID: <own@shop.test>\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n\
                    Subject: kept\r\n\r\nbody\r\n";
    let response = h
        .submission(SUBMIT_KEY)
        .submit(raw("", &["kept@raw.test"], complete))
        .await
        .unwrap()
        .into_inner();
    let records = h.mail_of(&response.message_id, "raw.test").await;
    assert_eq!(records[0].body, complete.as_bytes());
    assert!(
        records[0].envelope.sender.is_none(),
        "empty is the null sender"
    );
}

/// Text and HTML alternatives, an attachment, an inline image, Cc, Bcc, Reply-To and a
/// custom header become the MIME structure the docs promise; Bcc is an envelope recipient
/// and appears nowhere in the message.
async fn structured_message_is_built_into_mime<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
) {
    let png = b"\x89PNG\r\n\x1a\n fake image bytes \x00\xff".to_vec();
    let pdf = b"%PDF-1.4 fake \x00\x01\x02".to_vec();
    let structured = v1::StructuredMessage {
        from: "Shop <orders@shop.test>".into(),
        reply_to: vec!["Support <help@shop.test>".into()],
        to: vec!["Ann Example <ann@mime.test>".into()],
        cc: vec!["bob@mime.test".into()],
        bcc: vec!["audit@mime.test".into()],
        subject: "Your order ✓".into(),
        text: "Thanks for your order.\n".into(),
        html: "<p>Thanks!</p><img src=\"cid:logo\">".into(),
        attachments: vec![v1::Attachment {
            filename: "invoice.pdf".into(),
            content_type: "application/pdf".into(),
            content: pdf.clone(),
            content_id: String::new(),
        }],
        inline: vec![v1::Attachment {
            filename: "logo.png".into(),
            content_type: "image/png".into(),
            content: png.clone(),
            content_id: "logo".into(),
        }],
        headers: vec![v1::Header {
            name: "List-Unsubscribe".into(),
            value: "<https://shop.test/u/1>".into(),
        }],
        envelope_from: "bounces@shop.test".into(),
    };
    let request = v1::SubmitRequest {
        client_id: "s-1".into(),
        message: Some(Kind::Structured(structured)),
        ..Default::default()
    };
    let response = h
        .submission(SUBMIT_KEY)
        .submit(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.recipients,
        [
            queued("ann@mime.test"),
            queued("bob@mime.test"),
            queued("audit@mime.test")
        ]
    );
    let records = h.mail_of(&response.message_id, "mime.test").await;
    assert_eq!(records.len(), 1);
    let q = &records[0];
    assert_eq!(
        recipients(q),
        ["ann@mime.test", "bob@mime.test", "audit@mime.test"]
    );
    assert_eq!(
        q.envelope.sender.as_ref().unwrap().to_string(),
        "bounces@shop.test"
    );
    let text = String::from_utf8_lossy(&q.body);
    assert!(
        !text.contains("audit@"),
        "Bcc leaked into the message:\n{text}"
    );

    let m = MessageParser::default().parse(&q.body[..]).expect("parses");
    assert_eq!(
        tree(&m, 0),
        "multipart/mixed[multipart/alternative[text/plain,multipart/related[text/html,image/png]],application/pdf]"
    );
    let from = m.from().unwrap().first().unwrap();
    assert_eq!(
        (from.name(), from.address()),
        (Some("Shop"), Some("orders@shop.test"))
    );
    let to = m.to().unwrap().first().unwrap();
    assert_eq!(
        (to.name(), to.address()),
        (Some("Ann Example"), Some("ann@mime.test"))
    );
    assert_eq!(
        m.cc().unwrap().first().unwrap().address(),
        Some("bob@mime.test")
    );
    assert_eq!(
        m.reply_to().unwrap().first().unwrap().address(),
        Some("help@shop.test")
    );
    assert!(m.bcc().is_none());
    assert_eq!(m.subject(), Some("Your order ✓"));
    assert_eq!(
        m.header_raw("List-Unsubscribe").map(str::trim),
        Some("<https://shop.test/u/1>")
    );
    // Message-ID and Date come from the publish path, as for SMTP.
    assert_eq!(
        m.message_id(),
        Some(format!("{}@{HOSTNAME}", q.id).as_str())
    );
    assert!(m.date().is_some());
    assert_eq!(
        m.body_text(0).unwrap().replace("\r\n", "\n"),
        "Thanks for your order.\n"
    );
    assert_eq!(
        m.body_html(0).unwrap(),
        "<p>Thanks!</p><img src=\"cid:logo\">"
    );
    let inline = m
        .parts
        .iter()
        .find(|p| p.content_id() == Some("logo"))
        .expect("the inline image has its Content-ID");
    assert_eq!(inline.contents(), &png[..]);
    let attachment = m
        .attachments()
        .find(|p| p.attachment_name() == Some("invoice.pdf"))
        .expect("the attachment");
    assert_eq!(attachment.contents(), &pdf[..]);
}

/// The MIME tree under part `id`: `type/subtype[children,…]`.
fn tree(m: &mail_parser::Message<'_>, id: u32) -> String {
    let part = m.part(id).unwrap();
    let ct = part
        .content_type()
        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
        .unwrap_or_default();
    match &part.body {
        PartType::Multipart(children) => {
            let children: Vec<String> = children.iter().map(|c| tree(m, *c)).collect();
            format!("{ct}[{}]", children.join(","))
        }
        _ => ct,
    }
}

async fn suppress<S: State>(state: &S, address: &str) {
    let entry = Suppression {
        scope: Scope::Tenant(Tenant::new(TENANT).unwrap()),
        address: Address::parse(address).unwrap(),
        reason: Reason::Unsubscribe,
        source: "test".into(),
        created: SystemTime::now(),
        expires: None,
    };
    state.suppress(&[entry]).await.unwrap();
}

/// A suppressed recipient is reported SUPPRESSED, left out of the mail and published as a
/// SUPPRESSED event for the message; another tenant's list does not apply. A message whose
/// every recipient is suppressed is answered with an id, queues no mail, and is evented.
async fn suppressed_recipients_are_reported_and_evented<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
) {
    suppress(&h.state, "gone@supp.test").await;
    let mut request = raw("", &["ok@supp.test", "gone@supp.test"], &message("supp"));
    request.tags.insert("campaign".into(), "s".into());
    let response = h
        .submission(SUBMIT_KEY)
        .submit(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.recipients,
        [
            queued("ok@supp.test"),
            result("gone@supp.test", v1::RecipientStatus::Suppressed)
        ]
    );
    let records = h.mail_of(&response.message_id, "supp.test").await;
    assert_eq!(records.len(), 1);
    assert_eq!(recipients(&records[0]), ["ok@supp.test"]);

    let event = wait_event(h, &response.message_id).await;
    assert_eq!(event.core_outcome().unwrap(), Some(Outcome::Suppressed));
    assert_eq!(event.recipient, "gone@supp.test");
    assert_eq!(event.tenant, TENANT);
    assert_eq!(event.tags.get("campaign").map(String::as_str), Some("s"));

    // Only suppressed recipients: an id, no mail, the event.
    let response = h
        .submission(SUBMIT_KEY)
        .submit(raw("", &["gone@supp.test"], &message("none left")))
        .await
        .unwrap()
        .into_inner();
    assert!(!response.message_id.is_empty());
    assert_eq!(
        response.recipients,
        [result("gone@supp.test", v1::RecipientStatus::Suppressed)]
    );
    let event = wait_event(h, &response.message_id).await;
    assert_eq!(event.recipient, "gone@supp.test");
    assert!(
        h.mail_of(&response.message_id, "supp.test")
            .await
            .is_empty()
    );

    // The list is the caller's tenant's.
    let response = h
        .submission(OTHER_TENANT_KEY)
        .submit(raw("", &["gone@supp.test"], &message("other tenant")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.recipients, [queued("gone@supp.test")]);
    assert_eq!(h.mail_of(&response.message_id, "supp.test").await.len(), 1);
}

async fn wait_event<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
    message_id: &str,
) -> v1::Event {
    wait_for("the SUPPRESSED event", Duration::from_secs(30), || async {
        h.events()
            .into_iter()
            .map(|(_, e)| e)
            .find(|e| e.message_id().unwrap().map(|m| m.to_string()).as_deref() == Some(message_id))
    })
    .await
    .unwrap()
}

/// The same idempotency key twice: the first result again, marked duplicate, with the
/// second request's client id; one record. Concurrent requests with one key: one message.
async fn idempotency_keys_queue_once<Q: Queue + Clone, S: State + Clone>(h: &Harness<Q, S>) {
    let request = |client_id: &str, key: &str| {
        let mut r = raw("", &["buyer@idem.test"], &message("order"));
        r.client_id = client_id.into();
        r.idempotency_key = key.into();
        r
    };
    let client = h.submission(SUBMIT_KEY);
    let first = client
        .clone()
        .submit(request("first", "order-42"))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .clone()
        .submit(request("second", "order-42"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.client_id, "second");
    assert_eq!(second.recipients, first.recipients);
    assert_eq!(h.mail_of(&first.message_id, "idem.test").await.len(), 1);

    // Keys are per tenant: another tenant's request with the same key is its own.
    let other = h
        .submission(OTHER_TENANT_KEY)
        .submit(request("other", "order-42"))
        .await
        .unwrap()
        .into_inner();
    assert!(!other.duplicate);
    assert_ne!(other.message_id, first.message_id);

    // Concurrent: every answer names one message, queued once.
    let calls = (0..4).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .submit(request(&format!("c{i}"), "order-43"))
                .await
                .unwrap()
                .into_inner()
        }
    });
    let answers = futures::future::join_all(calls).await;
    let ids: HashSet<&str> = answers.iter().map(|a| a.message_id.as_str()).collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|a| !a.duplicate).count(), 1);
    let id = answers[0].message_id.clone();
    assert_eq!(h.mail_of(&id, "idem.test").await.len(), 1);
}

/// 500 requests over one stream: each answered once, by its client id, all queued.
async fn stream_answers_every_request<Q: Queue + Clone, S: State + Clone>(h: &Harness<Q, S>) {
    const N: usize = 500;
    let requests: Vec<v1::SubmitRequest> = (0..N)
        .map(|i| {
            let mut r = raw("", &[&format!("r{i}@stream.test")], &message("stream"));
            r.client_id = format!("m-{i}");
            r
        })
        .collect();
    let before = h.mail().len();
    let mut responses = h
        .submission(SUBMIT_KEY)
        .submit_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen = HashSet::new();
    let mut ids = HashSet::new();
    while let Some(response) = responses.message().await.unwrap() {
        assert!(response.error.is_none(), "{response:?}");
        let i: usize = response
            .client_id
            .strip_prefix("m-")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(response.recipients, [queued(&format!("r{i}@stream.test"))]);
        assert!(seen.insert(i), "answered twice: {i}");
        ids.insert(response.message_id);
    }
    assert_eq!(seen.len(), N);
    assert_eq!(ids.len(), N);
    let mail = h.wait_mail(before + N).await;
    let queued: HashSet<String> = mail.iter().map(|q| q.id.to_string()).collect();
    assert!(ids.is_subset(&queued));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_message_is_normalised_like_smtp_embedded() {
    raw_message_is_normalised_like_smtp(&Harness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_message_is_built_into_mime_embedded() {
    structured_message_is_built_into_mime(&Harness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressed_recipients_are_reported_and_evented_embedded() {
    suppressed_recipients_are_reported_and_evented(&Harness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_queue_once_embedded() {
    idempotency_keys_queue_once(&Harness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_answers_every_request_embedded() {
    stream_answers_every_request(&Harness::start().await).await;
}

/// The main flows on Kafka (Tansu) and Redis, one broker for all (starting it is the slow
/// part).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_main_flows() {
    let h = Harness::cluster(|_| {}).await;
    raw_message_is_normalised_like_smtp(&h).await;
    structured_message_is_built_into_mime(&h).await;
    suppressed_recipients_are_reported_and_evented(&h).await;
    idempotency_keys_queue_once(&h).await;
    stream_answers_every_request(&h).await;
}

// ---------------------------------------------------------------------------------------
// Refusals.
// ---------------------------------------------------------------------------------------

fn structured(tweak: impl FnOnce(&mut v1::StructuredMessage)) -> v1::SubmitRequest {
    let mut s = v1::StructuredMessage {
        from: "orders@shop.test".into(),
        to: vec!["a@bad.test".into()],
        text: "hi".into(),
        ..Default::default()
    };
    tweak(&mut s);
    v1::SubmitRequest {
        message: Some(Kind::Structured(s)),
        ..Default::default()
    }
}

fn attachment(content_type: &str) -> v1::Attachment {
    v1::Attachment {
        filename: "f.bin".into(),
        content_type: content_type.into(),
        content: b"x".to_vec(),
        content_id: String::new(),
    }
}

/// Each bad request is INVALID_ARGUMENT with a message that starts with the field's path,
/// and queues nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_name_the_field() {
    let h = Harness::start().await;
    let with = |tweak: fn(&mut v1::SubmitRequest)| {
        let mut r = raw("", &["a@bad.test"], &message("bad"));
        tweak(&mut r);
        r
    };
    let cases: Vec<(v1::SubmitRequest, &str)> = vec![
        (v1::SubmitRequest::default(), "message: "),
        (
            raw("", &["a@bad.test", "b@bad.test", "no-at-sign"], "x"),
            "raw.envelope_to[2]: ",
        ),
        (raw("", &[], "x"), "raw.envelope_to: "),
        (
            raw("not an address", &["a@bad.test"], "x"),
            "raw.envelope_from: ",
        ),
        (raw("", &["a@bad.test"], ""), "raw.data: "),
        (
            raw("", &["a@bad.test"], "Subject: x\r\n\r\nbare\rCR\r\n"),
            "raw.data: ",
        ),
        (with(|r| r.client_id = "c".repeat(129)), "client_id: "),
        (
            with(|r| r.idempotency_key = "k".repeat(129)),
            "idempotency_key: ",
        ),
        (
            with(|r| {
                r.tags = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
            }),
            "tags: ",
        ),
        (
            with(|r| {
                r.tags.insert("k".repeat(65), String::new());
            }),
            "tags[\"",
        ),
        (
            with(|r| {
                r.tags.insert("campaign".into(), "v".repeat(257));
            }),
            "tags[\"campaign\"]: ",
        ),
        (structured(|s| s.from.clear()), "structured.from: "),
        (structured(|s| s.to = vec![]), "structured.to: "),
        (
            structured(|s| s.cc = vec!["ok@bad.test".into(), "Name <broken>".into()]),
            "structured.cc[1]: ",
        ),
        (
            structured(|s| s.bcc = vec!["@x".into()]),
            "structured.bcc[0]: ",
        ),
        (
            structured(|s| s.reply_to = vec!["x".into()]),
            "structured.reply_to[0]: ",
        ),
        (
            structured(|s| s.subject = "a\r\nBcc: x@y.test".into()),
            "structured.subject: ",
        ),
        (structured(|s| s.text.clear()), "structured.text: "),
        (
            structured(|s| s.attachments = vec![attachment("application/pdf"), attachment("pdf")]),
            "structured.attachments[1].content_type: ",
        ),
        (
            structured(|s| s.attachments = vec![attachment("multipart/mixed")]),
            "structured.attachments[0].content_type: ",
        ),
        (
            structured(|s| {
                let mut a = attachment("application/pdf");
                a.filename.clear();
                s.attachments = vec![a];
            }),
            "structured.attachments[0].filename: ",
        ),
        (
            structured(|s| {
                s.html = "<img src=cid:x>".into();
                s.inline = vec![attachment("image/png")];
            }),
            "structured.inline[0].content_id: ",
        ),
        (
            structured(|s| s.inline = vec![attachment("image/png")]),
            "structured.inline: ",
        ),
        (
            structured(|s| {
                s.headers = vec![v1::Header {
                    name: "Bcc".into(),
                    value: "x@y.test".into(),
                }]
            }),
            "structured.headers[0].name: ",
        ),
        (
            structured(|s| {
                s.headers = vec![v1::Header {
                    name: "X Bad".into(),
                    value: "v".into(),
                }]
            }),
            "structured.headers[0].name: ",
        ),
        (
            structured(|s| {
                s.headers = vec![
                    v1::Header {
                        name: "X-Ok".into(),
                        value: "v".into(),
                    },
                    v1::Header {
                        name: "X-Injected".into(),
                        value: "v\r\nBcc: x@y.test".into(),
                    },
                ]
            }),
            "structured.headers[1].value: ",
        ),
        (
            structured(|s| s.envelope_from = "nope".into()),
            "structured.envelope_from: ",
        ),
    ];
    let mut client = h.submission(SUBMIT_KEY);
    for (request, field) in cases {
        let status = client.submit(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "expected {field:?}, got {:?}",
            status.message()
        );
    }
    h.barrier("bad.test").await;
    let bad: Vec<_> = h
        .mail()
        .into_iter()
        .filter(|q| recipients(q).iter().any(|r| r == "a@bad.test"))
        .collect();
    assert!(bad.is_empty(), "refused requests queued mail: {bad:?}");
}

/// A request over `max_request_bytes` is RESOURCE_EXHAUSTED, unary or on a stream, and
/// queues nothing; one just under the limit is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_max_request_bytes_are_resource_exhausted() {
    let h = Harness::embedded(|s| s.grpc.max_request_bytes = 16 * 1024).await;
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(20 * 1024));
    let mut client = h.submission(SUBMIT_KEY);
    let status = client
        .submit(raw("", &["a@size.test"], &big))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_request_bytes"), "{status:?}");

    let fits = format!("Subject: fits\r\n\r\n{}\r\n", "x".repeat(15 * 1024));
    client
        .submit(raw("", &["a@size.test"], &fits))
        .await
        .unwrap();

    let mut stream = client
        .submit_stream(tokio_stream::iter(vec![raw("", &["b@size.test"], &big)]))
        .await
        .unwrap()
        .into_inner();
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    h.barrier("size.test").await;
    assert_eq!(h.mail().len(), 2, "the one that fits and the barrier");
}

/// A bad request on a stream fails that request only: its response carries the error (with
/// the field), the others are queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_errors_are_per_request() {
    let h = Harness::start().await;
    let requests: Vec<v1::SubmitRequest> = (0..20_usize)
        .map(|i| {
            let to = if i.is_multiple_of(5) {
                "broken".to_owned()
            } else {
                format!("r{i}@mixed.test")
            };
            let mut r = raw("", &[&to], &message("mixed"));
            r.client_id = i.to_string();
            r
        })
        .collect();
    let mut responses = h
        .submission(SUBMIT_KEY)
        .submit_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let (mut ok, mut failed) = (0, 0);
    while let Some(response) = responses.message().await.unwrap() {
        let i: usize = response.client_id.parse().unwrap();
        if i.is_multiple_of(5) {
            let error = response.error.expect("an error");
            assert_eq!(error.code, i32::from(Code::InvalidArgument));
            assert!(
                error.message.starts_with("raw.envelope_to[0]: "),
                "{error:?}"
            );
            assert!(response.message_id.is_empty());
            failed += 1;
        } else {
            assert!(response.error.is_none(), "{response:?}");
            ok += 1;
        }
    }
    assert_eq!((ok, failed), (16, 4));
    assert_eq!(h.wait_mail(16).await.len(), 16);
}

/// A client that sends 10,000 requests and never reads a response: the server stops
/// reading requests once `stream_window` are in flight and the responses fill the HTTP/2
/// windows, so the queue stops growing far below 10,000 and the client's transport stops
/// taking requests (nobody buffers the rest). Once the client reads, everything goes
/// through.
///
/// The client's HTTP/2 receive window is set to 64 KiB (the protocol's default; tonic's is
/// 2 MiB, room for every response of this test): that window, the server's 1 MiB receive
/// window for requests and `stream_window` are the only buffers. Responses are made larger
/// than 256 bytes (long client ids and addresses): h2 counts buffered DATA frames smaller
/// than that against a budget and drops the connection (ENHANCE_YOUR_CALM) when a client
/// leaves too many of them unread, which would end the stream before flow control shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_stops_the_server_reading() {
    const N: usize = 10_000;
    const WINDOW: usize = 8;
    let h = Harness::embedded(|s| s.grpc.stream_window = WINDOW).await;
    let channel = h
        .endpoint()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut client = SubmissionServiceClient::with_interceptor(channel, bearer(SUBMIT_KEY));
    let pulled = Arc::new(AtomicUsize::new(0));
    let body = format!("Subject: flow\r\n\r\n{}\r\n", "x".repeat(1000));
    let local = "r".repeat(63);
    let to = [format!("{local}1@flow.test"), format!("{local}2@flow.test")];
    let requests = {
        let pulled = pulled.clone();
        tokio_stream::StreamExt::map(tokio_stream::iter(0..N), move |i| {
            pulled.fetch_add(1, Ordering::SeqCst);
            let mut r = raw("", &[&to[0], &to[1]], &body);
            r.client_id = format!("{i:0>128}");
            r
        })
    };
    let mut responses = client.submit_stream(requests).await.unwrap().into_inner();

    // Wait until neither the queue nor the client's sending has moved for a second.
    let mut last = (usize::MAX, usize::MAX);
    let mut since = Instant::now();
    let (queued, sent) = wait_for("the stream to stall", Duration::from_secs(60), || {
        let now = (h.mail().len(), pulled.load(Ordering::SeqCst));
        if now != last {
            last = now;
            since = Instant::now();
        }
        let stalled = since.elapsed() >= Duration::from_secs(1);
        async move { stalled.then_some(now) }
    })
    .await
    .unwrap();
    eprintln!("stalled at {queued} queued, {sent} taken from the client");
    assert!(
        queued < 1_000,
        "the server kept reading: {queued} of {N} requests queued while no response was read"
    );
    assert!(queued >= WINDOW, "nothing went through: {queued}");
    assert!(
        sent < 2_500,
        "the transport took {sent} of {N} requests from the client"
    );

    // Reading resumes everything.
    let mut answered = 0;
    while let Some(response) = responses.message().await.unwrap() {
        assert!(response.error.is_none(), "{response:?}");
        answered += 1;
    }
    assert_eq!(answered, N);
    h.wait_mail(N).await;
}

/// A stuck claim (another request holds the key and never finishes) is ABORTED after the
/// bounded wait, and nothing is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_progress_is_aborted_after_waiting() {
    let h = Harness::start().await;
    let tenant = Tenant::new(TENANT).unwrap();
    assert_eq!(
        h.state
            .claim_idempotency_key(&tenant, "stuck")
            .await
            .unwrap(),
        Claim::New
    );
    let mut request = raw("", &["a@stuck.test"], &message("stuck"));
    request.idempotency_key = "stuck".into();
    let started = Instant::now();
    let status = h.submission(SUBMIT_KEY).submit(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(status.message(), "a request with this key is in progress");
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(8)..Duration::from_secs(20)).contains(&waited),
        "{waited:?}"
    );
    h.barrier("stuck.test").await;
    assert_eq!(h.mail().len(), 1, "only the barrier");
}

// ---------------------------------------------------------------------------------------
// Queue failures.
// ---------------------------------------------------------------------------------------

/// Nothing listens where the Kafka brokers should be: the queue never acknowledges, so a
/// submission is UNAVAILABLE after the ack timeout, and an idempotency key is released for
/// the retry. A record over librdkafka's `message.max.bytes` is refused before sending:
/// INVALID_ARGUMENT (the same request can never succeed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_failures_map_to_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue_config = QueueConfig {
        backend: kurir_queue::config::Backend::Kafka,
        ..QueueConfig::default()
    };
    queue_config.kafka.brokers = format!("127.0.0.1:{}", kurir_testkit::free_port());
    queue_config.kafka.delivery_timeout = Duration::from_secs(1);
    queue_config
        .kafka
        .properties
        .insert("message.max.bytes".into(), "20000".into());
    let queue = KafkaQueue::connect(&queue_config).unwrap();
    let state_config = kurir_state::StateConfig {
        tenants: vec![TENANT.into()],
        ..Default::default()
    };
    let state = EmbeddedState::open(&dir.path().join("state"), &state_config).unwrap();
    let publisher = Publisher::new(
        queue.clone(),
        PublishConfig {
            hostname: HOSTNAME.into(),
            topic: "kurir.mail".into(),
            ack_timeout: Duration::from_millis(500),
            shards: Default::default(),
        },
    );
    let config = GrpcConfig {
        api_keys: keys(),
        ..GrpcConfig::default()
    };
    let hooks = AdminHooks {
        sites: None,
        delivery: vec![kurir_queue::DeliverySubscription {
            group: "kurir-deliver".into(),
            topic: "kurir.mail".into(),
        }],
        topic_specs: Vec::new(),
        max_age: Duration::from_secs(86_400),
    };
    let lifecycle = kurir_lifecycle::Lifecycle::new();
    let server = GrpcServer::new(
        config,
        publisher,
        queue,
        state.clone(),
        hooks,
        lifecycle.clone(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(server.serve(listener));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let mut client = SubmissionServiceClient::with_interceptor(channel, bearer(SUBMIT_KEY));

    let mut request = raw("", &["a@down.test"], &message("down"));
    request.idempotency_key = "retry-me".into();
    let started = Instant::now();
    let status = client.submit(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let tenant = Tenant::new(TENANT).unwrap();
    assert_eq!(
        state
            .claim_idempotency_key(&tenant, "retry-me")
            .await
            .unwrap(),
        Claim::New,
        "the key was released for the retry"
    );

    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(30_000));
    let status = client
        .submit(raw("", &["a@down.test"], &big))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("size"), "{status:?}");

    lifecycle.shutdown();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
