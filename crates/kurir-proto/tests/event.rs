//! `Event` helpers and the outcome/bounce-class mapping.

use kurir_core::{BounceClass, MessageId, Outcome};
use kurir_proto::convert::{bounce_class_from_proto, outcome_from_proto, outcome_to_proto};
use kurir_proto::{DecodeError, v1};

#[test]
fn every_bounce_class_round_trips() {
    for class in BounceClass::ALL {
        let wire = v1::BounceClass::from(class);
        assert_eq!(
            bounce_class_from_proto("bounce_class", wire.into()).unwrap(),
            class
        );
        // The protobuf names follow kurir-core's (BOUNCE_CLASS_BAD_MAILBOX ~ bad-mailbox).
        let proto_name = wire.as_str_name().strip_prefix("BOUNCE_CLASS_").unwrap();
        assert_eq!(
            proto_name.to_ascii_lowercase().replace('_', "-"),
            class.as_str()
        );
    }
    assert_eq!(
        bounce_class_from_proto("bounce_class", 0),
        Err(DecodeError::Missing {
            field: "bounce_class".to_owned()
        })
    );
    assert_eq!(
        bounce_class_from_proto("bounce_class", 99),
        Err(DecodeError::UnknownEnum {
            field: "bounce_class".to_owned(),
            value: 99
        })
    );
}

#[test]
fn every_outcome_round_trips() {
    let outcomes = [
        Outcome::Delivered,
        Outcome::Deferred,
        Outcome::Expired,
        Outcome::Suppressed,
    ]
    .into_iter()
    .chain(BounceClass::ALL.map(Outcome::Bounced));
    for outcome in outcomes {
        let (o, c) = outcome_to_proto(outcome);
        assert_eq!(
            c == v1::BounceClass::Unspecified,
            !matches!(outcome, Outcome::Bounced(_))
        );
        assert_eq!(
            outcome_from_proto(o.into(), c.into()).unwrap(),
            Some(outcome)
        );
        assert_eq!(
            o.as_str_name().strip_prefix("OUTCOME_").unwrap(),
            outcome.as_str().to_uppercase()
        );
    }
}

#[test]
fn bad_outcomes_are_refused() {
    assert_eq!(
        outcome_from_proto(0, 0).unwrap_err().field(),
        Some("outcome")
    );
    assert_eq!(
        outcome_from_proto(42, 0).unwrap_err().field(),
        Some("outcome")
    );
    // A bounce must say why.
    let bounced = v1::Outcome::Bounced.into();
    assert_eq!(
        outcome_from_proto(bounced, 0).unwrap_err().field(),
        Some("bounce_class")
    );
    assert_eq!(
        outcome_from_proto(v1::Outcome::Undecodable.into(), 0),
        Ok(None)
    );
}

#[test]
fn an_event_round_trips_through_bytes() {
    let mut event = v1::Event {
        tenant: "acme".to_owned(),
        recipient: "a@rcpt.test".to_owned(),
        routing_key: "rcpt.test".to_owned(),
        reply: Some(v1::RemoteReply {
            code: 550,
            enhanced_code: "5.1.1".to_owned(),
            text: "no such user".to_owned(),
        }),
        mx_host: "mx1.rcpt.test".to_owned(),
        tls_version: "TLSv1.3".to_owned(),
        attempt: 1,
        queued_ms: 1_500,
        attempt_duration_ms: 230,
        time_unix_ms: 1_700_000_000_000,
        tags: [("campaign".to_owned(), "welcome".to_owned())].into(),
        ..Default::default()
    };
    let (event_id, message_id) = (MessageId::new(), MessageId::new());
    event.set_event_id(event_id);
    event.set_message_id(message_id);
    event.set_core_outcome(Outcome::Bounced(BounceClass::BadMailbox));

    let decoded = v1::Event::decode_bytes(event.encode_to_bytes()).unwrap();
    assert_eq!(decoded, event);
    assert_eq!(decoded.event_id().unwrap(), event_id);
    assert_eq!(decoded.message_id().unwrap(), Some(message_id));
    assert_eq!(
        decoded.core_outcome().unwrap(),
        Some(Outcome::Bounced(BounceClass::BadMailbox))
    );
}

#[test]
fn an_undecodable_record_event_carries_its_location() {
    let event = v1::Event::undecodable(
        MessageId::new(),
        v1::UndecodableRecord {
            topic: "kurir.retry.5m".to_owned(),
            partition: 3,
            offset: 1234,
            error: "id: an id is 16 bytes, got 15".to_owned(),
        },
        "rcpt.test".to_owned(),
        1_700_000_000_000,
    );
    let decoded = v1::Event::decode_bytes(event.encode_to_bytes()).unwrap();
    assert_eq!(decoded.outcome(), v1::Outcome::Undecodable);
    assert_eq!(decoded.core_outcome(), Ok(None));
    assert_eq!(decoded.message_id(), Ok(None));
    assert_eq!(decoded.undecodable.unwrap().offset, 1234);
}

#[test]
fn bad_event_ids_and_bytes_are_refused() {
    let event = v1::Event {
        message_id: vec![0; 15],
        ..Default::default()
    };
    assert_eq!(
        event.message_id(),
        Err(DecodeError::IdLength {
            field: "message_id".to_owned(),
            len: 15
        })
    );
    assert_eq!(event.event_id().unwrap_err().field(), Some("event_id"));
    let err = v1::Event::decode_bytes(&b"\x0a\xff\xff\xff\xff\x0f"[..]).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Protobuf {
            message: "kurir.v1.Event",
            ..
        }
    ));
}
