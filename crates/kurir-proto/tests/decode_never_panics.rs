//! Property tests: decoding never panics, whatever the bytes, and valid records round-trip.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use kurir_core::{
    Address, BodyType, Envelope, MessageId, Notify, Orcpt, Recipient, Ret, RoutingKey,
};
use kurir_proto::{Queued, v1};
use proptest::prelude::*;
use prost::Message;

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Queued::decode(bytes.as_slice());
        let _ = v1::Event::decode_bytes(bytes.as_slice());
        if let Ok(event) = v1::Event::decode(bytes.as_slice()) {
            let _ = event.core_outcome();
            let _ = event.message_id();
        }
    }

    /// Valid records with bytes overwritten or cut off: close to real corruption.
    #[test]
    fn corrupted_records_never_panic(
        q in valid_queued(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = q.encode_to_bytes().to_vec();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let _ = Queued::decode(bytes.as_slice());
        let _ = Queued::decode(&bytes[..cut.index(bytes.len() + 1)]);
    }

    /// Well-formed protobuf with arbitrary field contents: validation never panics either.
    #[test]
    fn arbitrary_field_values_never_panic(wire in arbitrary_wire()) {
        let bytes = wire.encode_to_bytes();
        prop_assert_eq!(Queued::decode(bytes).is_ok(), Queued::try_from(wire).is_ok());
    }

    #[test]
    fn valid_records_round_trip(q in valid_queued()) {
        let decoded = Queued::decode(q.encode_to_bytes()).unwrap();
        prop_assert_eq!(decoded, q);
    }
}

fn arbitrary_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z]{1,8}@[a-zA-Zü.-]{0,12}",
        "[a-z.]{0,10}(#[0-9x]{0,3})?",
        Just(String::new()),
    ]
}

fn arbitrary_wire() -> impl Strategy<Value = v1::QueuedMessage> {
    let recipient = (
        arbitrary_text(),
        proptest::option::of(any::<(bool, bool, bool)>()),
        proptest::option::of((arbitrary_text(), arbitrary_text())),
    )
        .prop_map(|(address, notify, orcpt)| v1::Recipient {
            address,
            notify: notify.map(|(success, failure, delay)| v1::Notify {
                success,
                failure,
                delay,
            }),
            orcpt: orcpt.map(|(addr_type, address)| v1::Orcpt { addr_type, address }),
        });
    let envelope = (
        arbitrary_text(),
        -2..5i32,
        proptest::option::of(arbitrary_text()),
        -2..6i32,
        any::<bool>(),
    )
        .prop_map(|(sender, ret, envid, body_type, smtputf8)| v1::Envelope {
            sender,
            ret,
            envid,
            body_type,
            smtputf8,
        });
    (
        proptest::collection::vec(any::<u8>(), 0..20),
        arbitrary_text(),
        proptest::option::of(envelope),
        proptest::collection::vec(recipient, 0..4),
        any::<(u32, i64, i64)>(),
    )
        .prop_map(
            |(id, routing_key, envelope, recipients, (attempts, first_seen, not_before))| {
                v1::QueuedMessage {
                    id,
                    routing_key,
                    envelope,
                    recipients,
                    attempts,
                    first_seen_unix_ms: first_seen,
                    not_before_unix_ms: not_before,
                    ..Default::default()
                }
            },
        )
}

fn valid_address() -> impl Strategy<Value = Address> {
    let local = prop_oneof![
        "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\\.[a-z0-9+_-]{1,6}){0,2}",
        "[a-z ]{1,8}\"?[a-z]{0,4}",
        "[äöüÿ用户]{1,4}",
    ];
    let domain = prop_oneof![
        Just("example.test"),
        Just("Bücher.test"),
        Just("例子.test"),
        Just("xn--bcher-kva.test"),
        Just("SUB.Example.TEST"),
    ];
    (local, domain).prop_map(|(local, domain)| {
        let domain = kurir_core::Domain::parse(domain).unwrap();
        Address::new(&local, domain).unwrap()
    })
}

fn valid_queued() -> impl Strategy<Value = Queued> {
    let recipient = (
        valid_address(),
        proptest::option::of(any::<(bool, bool, bool)>()),
        proptest::option::of(("[a-z0-9-]{1,8}", any::<String>())),
    )
        .prop_map(|(address, notify, orcpt)| Recipient {
            address,
            notify: notify.map(|(success, failure, delay)| Notify {
                success,
                failure,
                delay,
            }),
            orcpt: orcpt.map(|(addr_type, address)| Orcpt { addr_type, address }),
        });
    (
        any::<u128>(),
        proptest::option::of(valid_address()),
        proptest::collection::vec(recipient, 1..4),
        (
            0..3u8,
            proptest::option::of(any::<String>()),
            0..3u8,
            any::<bool>(),
        ),
        (
            any::<u32>(),
            -1_000_000_000_000i64..5_000_000_000_000,
            0..5_000_000_000_000i64,
            1..8u16,
        ),
        proptest::collection::btree_map("[a-z]{1,6}", any::<String>(), 0..3),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |(
                id,
                sender,
                recipients,
                (ret, envid, body, smtputf8),
                (attempts, first, nb, shards),
                tags,
                body_bytes,
            )| {
                let id = MessageId::from_u128(id);
                let domain = recipients[0].address.domain().clone();
                let mut envelope = Envelope::new(sender);
                envelope.ret = [None, Some(Ret::Full), Some(Ret::Headers)][usize::from(ret)];
                envelope.envid = envid;
                envelope.body = [
                    BodyType::SevenBit,
                    BodyType::EightBitMime,
                    BodyType::BinaryMime,
                ][usize::from(body)];
                envelope.smtputf8 = smtputf8;
                envelope.recipients = recipients;
                let first_seen = if first >= 0 {
                    UNIX_EPOCH + Duration::from_millis(first.unsigned_abs())
                } else {
                    UNIX_EPOCH - Duration::from_millis(first.unsigned_abs())
                };
                Queued {
                    id,
                    tenant: "t".to_owned(),
                    routing_key: RoutingKey::for_message(domain, shards, id),
                    envelope,
                    attempts,
                    first_seen,
                    not_before: (nb != 0)
                        .then(|| UNIX_EPOCH + Duration::from_millis(nb.unsigned_abs())),
                    trace: None,
                    tags: tags.into_iter().collect::<BTreeMap<_, _>>(),
                    body: Bytes::from(body_bytes),
                }
            },
        )
}
