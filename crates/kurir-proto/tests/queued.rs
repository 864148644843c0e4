//! `Queued` ⇄ `QueuedMessage` ⇄ bytes: round trips and bad input.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use kurir_core::{
    Address, AddressError, BodyType, Envelope, MessageId, Notify, Orcpt, Recipient, Ret, RoutingKey,
};
use kurir_proto::{DecodeError, Queued, v1};
use prost::Message;

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn sample(envelope: Envelope) -> Queued {
    let domain = envelope.recipients[0].address.domain().clone();
    let id = MessageId::new();
    Queued {
        id,
        tenant: "acme".to_owned(),
        routing_key: RoutingKey::for_message(domain, 4, id),
        envelope,
        attempts: 2,
        first_seen: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        not_before: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_060_456)),
        trace: Some(v1::TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            tracestate: "vendor=x".to_owned(),
        }),
        tags: BTreeMap::from([("campaign".to_owned(), "welcome".to_owned())]),
        body: Bytes::from_static(b"Subject: hi\r\n\r\nhello\r\n"),
    }
}

/// core → proto → bytes → proto → core.
fn round_trip(q: &Queued) -> Queued {
    let bytes = q.encode_to_bytes();
    // Our writer (body appended after the other fields) gives prost's bytes exactly.
    assert_eq!(bytes, v1::QueuedMessage::from(q).encode_to_vec());
    let decoded = Queued::decode(bytes.clone()).unwrap();
    assert_eq!(&decoded, q);
    // Deterministic encoding: equal records are equal bytes.
    assert_eq!(decoded.encode_to_bytes(), bytes);
    decoded
}

#[test]
fn full_envelope_round_trips() {
    let mut env = Envelope::new(Some(addr("bounces+123@sender.test")));
    env.ret = Some(Ret::Headers);
    env.envid = Some("QQ314159".to_owned());
    env.body = BodyType::EightBitMime;
    env.recipients.push(Recipient {
        address: addr("a@rcpt.test"),
        notify: Some(Notify::parse("SUCCESS,DELAY").unwrap()),
        orcpt: Some(Orcpt::parse("rfc822;a+2Bx@orig.test").unwrap()),
    });
    env.recipients
        .push(Recipient::new(addr(r#""john doe"@rcpt.test"#)));
    let q = round_trip(&sample(env));
    assert_eq!(q.envelope.recipients[1].address.local_part(), "john doe");
    assert_eq!(
        q.envelope.recipients[0].orcpt.as_ref().unwrap().address,
        "a+x@orig.test"
    );
}

#[test]
fn idna_and_utf8_addresses_round_trip() {
    let mut env = Envelope::new(Some(addr("用户@例子.test")));
    env.smtputf8 = true;
    env.body = BodyType::BinaryMime;
    env.recipients
        .push(Recipient::new(addr("info@Bücher.test")));
    env.recipients.push(Recipient::new(addr("ÿ@bücher.test")));
    let q = sample(env);
    let wire = v1::QueuedMessage::from(&q);
    // Domains travel as A-labels, local parts as given.
    assert_eq!(wire.recipients[0].address, "info@xn--bcher-kva.test");
    assert_eq!(wire.recipients[1].address, "ÿ@xn--bcher-kva.test");
    assert!(wire.routing_key.starts_with("xn--bcher-kva.test#"));
    let q = round_trip(&q);
    assert!(q.envelope.smtputf8 && q.envelope.needs_smtputf8());
}

#[test]
fn null_sender_is_an_empty_string_and_comes_back_as_none() {
    let mut env = Envelope::new(None);
    env.recipients.push(Recipient::new(addr("a@rcpt.test")));
    let q = sample(env);
    assert_eq!(v1::QueuedMessage::from(&q).envelope.unwrap().sender, "");
    assert_eq!(round_trip(&q).envelope.sender, None);
}

#[test]
fn notify_never_differs_from_notify_not_given() {
    let mut env = Envelope::new(Some(addr("s@sender.test")));
    env.recipients.push(Recipient {
        notify: Some(Notify::NEVER),
        ..Recipient::new(addr("never@rcpt.test"))
    });
    env.recipients
        .push(Recipient::new(addr("default@rcpt.test")));
    let q = sample(env);

    let wire = v1::QueuedMessage::from(&q);
    assert_eq!(wire.recipients[0].notify, Some(v1::Notify::default()));
    assert_eq!(wire.recipients[1].notify, None);

    let q = round_trip(&q);
    assert_eq!(q.envelope.recipients[0].notify, Some(Notify::NEVER));
    assert_eq!(q.envelope.recipients[0].effective_notify(), Notify::NEVER);
    assert_eq!(q.envelope.recipients[1].notify, None);
    assert_eq!(q.envelope.recipients[1].effective_notify(), Notify::DEFAULT);
}

#[test]
fn absent_optional_fields_round_trip() {
    let mut env = Envelope::new(Some(addr("s@sender.test")));
    env.envid = Some(String::new()); // given but empty differs from not given
    env.recipients.push(Recipient::new(addr("a@rcpt.test")));
    let mut q = sample(env);
    q.routing_key = RoutingKey::new(q.envelope.recipients[0].address.domain().clone());
    q.not_before = None;
    q.trace = None;
    q.tags.clear();
    q.tenant.clear();
    q.body = Bytes::new();
    let q = round_trip(&q);
    assert_eq!(q.envelope.envid.as_deref(), Some(""));
    q.envelope
        .recipients
        .iter()
        .for_each(|r| assert!(r.orcpt.is_none()));
}

#[test]
fn times_before_the_epoch_round_trip() {
    let mut env = Envelope::new(None);
    env.recipients.push(Recipient::new(addr("a@rcpt.test")));
    let mut q = sample(env);
    q.first_seen = UNIX_EPOCH - Duration::from_millis(1_234);
    round_trip(&q);
}

#[test]
fn id_is_sixteen_big_endian_bytes() {
    let mut env = Envelope::new(None);
    env.recipients.push(Recipient::new(addr("a@rcpt.test")));
    let q = sample(env);
    let wire = v1::QueuedMessage::from(&q);
    assert_eq!(wire.id, q.id.to_u128().to_be_bytes());
    assert_eq!(wire.message_id().unwrap(), q.id);
}

#[test]
fn a_body_in_pieces_encodes_as_the_joined_body() {
    let mut env = Envelope::new(None);
    env.recipients.push(Recipient::new(addr("a@rcpt.test")));
    let q = sample(env);
    let body = b"Received: x\r\nSubject: hi\r\n\r\nhello\r\n";
    for cuts in [
        vec![],
        vec![0],
        vec![11, 11],
        vec![1, 13, 30],
        vec![body.len()],
    ] {
        let mut pieces = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([body.len()]) {
            pieces.push(&body[at..cut]);
            at = cut;
        }
        let joined = Queued {
            body: Bytes::from_static(body),
            ..q.clone()
        };
        let without = Queued {
            body: Bytes::new(),
            ..q.clone()
        };
        assert_eq!(
            without.encode_with_body(&pieces),
            joined.encode_to_bytes(),
            "{pieces:?}"
        );
    }
    // An empty body is no field at all, as prost writes it.
    let empty = Queued {
        body: Bytes::new(),
        ..q
    };
    assert_eq!(
        empty.encode_with_body::<&[u8]>(&[]),
        v1::QueuedMessage::from(&empty).encode_to_vec()
    );
}

#[test]
fn decoding_from_bytes_shares_the_body() {
    let mut env = Envelope::new(None);
    env.recipients.push(Recipient::new(addr("a@rcpt.test")));
    let mut q = sample(env);
    q.body = Bytes::from(vec![b'x'; 64 * 1024]);
    let bytes = q.encode_to_bytes();
    let decoded = Queued::decode(bytes.clone()).unwrap();
    let range = bytes.as_ptr_range();
    assert!(range.contains(&decoded.body.as_ptr()), "body was copied");
}

// ---- bad input ----------------------------------------------------------------------------

/// A valid wire record to break one field of.
fn valid_wire() -> v1::QueuedMessage {
    let mut env = Envelope::new(Some(addr("s@sender.test")));
    env.recipients.push(Recipient::new(addr("a@rcpt.test")));
    env.recipients.push(Recipient::new(addr("b@rcpt.test")));
    v1::QueuedMessage::from(&sample(env))
}

fn decode_err(wire: v1::QueuedMessage) -> DecodeError {
    Queued::decode(wire.encode_to_vec().as_slice()).unwrap_err()
}

#[test]
fn garbage_bytes_are_not_a_record() {
    let err = Queued::decode(&b"\xff\xff\xff\xff garbage"[..]).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Protobuf {
            message: "kurir.v1.QueuedMessage",
            ..
        }
    ));
    assert_eq!(err.field(), None);
    // A truncated record too.
    let bytes = valid_wire().encode_to_vec();
    let err = Queued::decode(&bytes[..bytes.len() - 3]).unwrap_err();
    assert!(matches!(err, DecodeError::Protobuf { .. }), "{err}");
}

#[test]
fn a_fifteen_byte_id_is_refused() {
    let mut wire = valid_wire();
    wire.id.truncate(15);
    let err = decode_err(wire);
    assert_eq!(
        err,
        DecodeError::IdLength {
            field: "id".to_owned(),
            len: 15
        }
    );
    assert_eq!(err.to_string(), "id: an id is 16 bytes, got 15");
}

#[test]
fn a_missing_id_is_refused() {
    let mut wire = valid_wire();
    wire.id.clear();
    assert_eq!(decode_err(wire).field(), Some("id"));
}

#[test]
fn an_invalid_recipient_address_names_the_recipient() {
    let mut wire = valid_wire();
    wire.recipients[1].address = "no-at-sign".to_owned();
    let err = decode_err(wire);
    assert_eq!(
        err,
        DecodeError::Address {
            field: "recipients[1].address".to_owned(),
            source: AddressError::MissingAt,
        }
    );
    assert!(
        err.to_string()
            .starts_with("recipients[1].address: invalid address")
    );
}

#[test]
fn an_invalid_sender_is_refused() {
    let mut wire = valid_wire();
    wire.envelope.as_mut().unwrap().sender = "user@[192.0.2.1]".to_owned();
    let err = decode_err(wire);
    assert_eq!(err.field(), Some("envelope.sender"));
    assert!(matches!(
        err,
        DecodeError::Address {
            source: AddressError::AddressLiteral,
            ..
        }
    ));
}

#[test]
fn unknown_enum_values_are_refused() {
    let mut wire = valid_wire();
    wire.envelope.as_mut().unwrap().ret = 7;
    assert_eq!(
        decode_err(wire),
        DecodeError::UnknownEnum {
            field: "envelope.ret".to_owned(),
            value: 7
        }
    );
    let mut wire = valid_wire();
    wire.envelope.as_mut().unwrap().body_type = -1;
    assert_eq!(decode_err(wire).field(), Some("envelope.body_type"));
}

#[test]
fn unspecified_body_type_reads_as_7bit() {
    let mut wire = valid_wire();
    wire.envelope.as_mut().unwrap().body_type = 0;
    let q = Queued::decode(wire.encode_to_bytes()).unwrap();
    assert_eq!(q.envelope.body, BodyType::SevenBit);
}

#[test]
fn bad_routing_keys_are_refused() {
    for key in ["", "example.test#x", "bad domain", "#3"] {
        let mut wire = valid_wire();
        wire.routing_key = key.to_owned();
        let err = decode_err(wire);
        assert!(
            matches!(err, DecodeError::RoutingKey { .. }),
            "{key:?}: {err}"
        );
        assert_eq!(err.field(), Some("routing_key"));
    }
}

#[test]
fn missing_envelope_or_recipients_are_refused() {
    let mut wire = valid_wire();
    wire.envelope = None;
    assert_eq!(
        decode_err(wire),
        DecodeError::Missing {
            field: "envelope".to_owned()
        }
    );
    let mut wire = valid_wire();
    wire.recipients.clear();
    assert_eq!(
        decode_err(wire),
        DecodeError::Missing {
            field: "recipients".to_owned()
        }
    );
}

#[test]
fn a_bad_orcpt_type_names_the_field() {
    let mut wire = valid_wire();
    wire.recipients[0].orcpt = Some(v1::Orcpt {
        addr_type: "rfc822;x".to_owned(),
        address: "a@b.test".to_owned(),
    });
    assert_eq!(
        decode_err(wire).field(),
        Some("recipients[0].orcpt.addr_type")
    );
}

#[test]
fn the_id_of_an_otherwise_invalid_record_can_still_be_read() {
    let mut wire = valid_wire();
    let id = wire.message_id().unwrap();
    wire.recipients[0].address = "broken".to_owned();
    let bytes = wire.encode_to_bytes();
    assert!(Queued::decode(bytes.clone()).is_err());
    let raw = v1::QueuedMessage::decode(bytes).unwrap();
    assert_eq!(raw.message_id().unwrap(), id);
}
