//! How values are written into Redis strings.
//!
//! Suppression entries and pauses use a tab-separated text form rather than JSON: it is
//! short (a million entries fit in little memory), readable in `redis-cli`, and parsable by
//! the Lua scripts. The free text comes last, so a tab inside it needs no escaping.
//! Times are kept in nanoseconds since the epoch so a value reads back exactly as written.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kurir_core::{Address, Domain};

use crate::error::StateError;
use crate::model::{
    DomainPause, PauseAction, Reason, Scope, Suppression, TrackEntry, truncate_text,
};

/// Nanoseconds since the epoch; a time before it is invalid input.
pub(super) fn nanos(t: SystemTime, field: &'static str) -> Result<u64, StateError> {
    let d = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| StateError::invalid(field, "is before 1970"))?;
    u64::try_from(d.as_nanos()).map_err(|_| StateError::invalid(field, "is too far in the future"))
}

/// Milliseconds since the epoch, rounded up: an expiry index scored this way never
/// removes an entry before it has expired.
pub(super) fn millis_ceil(t: SystemTime, field: &'static str) -> Result<u64, StateError> {
    Ok(nanos(t, field)?.div_ceil(1_000_000))
}

pub(super) fn now_millis() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

fn corrupt(what: &str, value: &str) -> StateError {
    StateError::Corrupt(format!("redis: bad {what} {value:?}"))
}

/// `reason \t created_ns \t expires_ns-or-empty \t source`.
pub(super) fn encode_entry(s: &Suppression) -> Result<String, StateError> {
    let created = nanos(s.created, "created")?;
    let expires = s
        .expires
        .map(|e| nanos(e, "expires"))
        .transpose()?
        .map(|e| e.to_string())
        .unwrap_or_default();
    let source = truncate_text(&s.source);
    Ok(format!(
        "{}\t{created}\t{expires}\t{source}",
        s.reason.as_str()
    ))
}

pub(super) fn decode_entry(
    scope: &Scope,
    address: &Address,
    value: &str,
) -> Result<Suppression, StateError> {
    let mut parts = value.splitn(4, '\t');
    let mut next = || {
        parts
            .next()
            .ok_or_else(|| corrupt("suppression entry", value))
    };
    let reason: Reason = next()?
        .parse()
        .map_err(|_| corrupt("suppression entry", value))?;
    let created = next()?
        .parse()
        .map_err(|_| corrupt("suppression entry", value))?;
    let expires = match next()? {
        "" => None,
        e => Some(time(
            e.parse().map_err(|_| corrupt("suppression entry", value))?,
        )),
    };
    let source = next()?.to_owned();
    Ok(Suppression {
        scope: scope.clone(),
        address: address.clone(),
        reason,
        source,
        created: time(created),
        expires,
    })
}

/// `until_ns-or-empty \t action \t reason` (`action`: `hold` or `bounce`). The scripts
/// read only the leading `until`.
///
/// Values written before pauses had an action are `until_ns-or-empty \t reason` and read
/// as [`PauseAction::Hold`]: a second field that is not an action name is the start of the
/// reason. (Such an old reason that itself began with `bounce` and a tab would be misread;
/// reasons are short operator notes, and a tab right after that word is not one.)
pub(super) fn encode_pause(p: &DomainPause) -> Result<String, StateError> {
    let until = p
        .until
        .map(|u| nanos(u, "until"))
        .transpose()?
        .map(|u| u.to_string())
        .unwrap_or_default();
    Ok(format!(
        "{until}\t{}\t{}",
        p.action.as_str(),
        truncate_text(&p.reason)
    ))
}

pub(super) fn decode_pause(domain: &str, value: &str) -> Result<DomainPause, StateError> {
    let domain = Domain::parse(domain).map_err(|_| corrupt("paused domain", domain))?;
    let (until, rest) = value
        .split_once('\t')
        .ok_or_else(|| corrupt("pause", value))?;
    let until = match until {
        "" => None,
        u => Some(time(u.parse().map_err(|_| corrupt("pause", value))?)),
    };
    let (action, reason) = rest
        .split_once('\t')
        .and_then(|(action, reason)| Some((action.parse().ok()?, reason)))
        .unwrap_or((PauseAction::Hold, rest));
    Ok(DomainPause {
        domain,
        until,
        reason: reason.to_owned(),
        action,
    })
}

/// JSON, with the detail cut to [`crate::model::MAX_TEXT`].
pub(super) fn encode_track(entry: &TrackEntry) -> Result<String, StateError> {
    nanos(entry.at, "at")?;
    let mut entry = entry.clone();
    entry.detail = truncate_text(&entry.detail).to_owned();
    serde_json::to_string(&entry)
        .map_err(|e| StateError::Corrupt(format!("encode history entry: {e}")))
}

pub(super) fn decode_track(value: &str) -> Result<TrackEntry, StateError> {
    serde_json::from_str(value).map_err(|_| corrupt("history entry", value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_exactly() {
        let s = Suppression {
            scope: Scope::Global,
            address: Address::parse("a@example.test").unwrap(),
            reason: Reason::Complaint,
            source: "fbl\twith tab".into(),
            created: SystemTime::now(),
            expires: Some(SystemTime::now() + Duration::from_secs(60)),
        };
        let encoded = encode_entry(&s).unwrap();
        assert_eq!(decode_entry(&s.scope, &s.address, &encoded).unwrap(), s);
    }

    fn pause(action: PauseAction, reason: &str) -> DomainPause {
        DomainPause {
            domain: Domain::parse("a.test").unwrap(),
            until: Some(SystemTime::now() + Duration::from_secs(60)),
            reason: reason.into(),
            action,
        }
    }

    #[test]
    fn pauses_round_trip_with_their_action() {
        for action in [PauseAction::Hold, PauseAction::Bounce] {
            for reason in ["", "incident", "tab\tinside", "hold", "bounce\tx"] {
                let p = pause(action, reason);
                let encoded = encode_pause(&p).unwrap();
                assert_eq!(decode_pause("a.test", &encoded).unwrap(), p, "{encoded:?}");
            }
        }
        let never = DomainPause {
            until: None,
            ..pause(PauseAction::Bounce, "r")
        };
        assert_eq!(encode_pause(&never).unwrap(), "\tbounce\tr");
    }

    #[test]
    fn pauses_written_without_an_action_read_as_hold() {
        for (old, reason) in [
            ("\tincident", "incident"),
            ("\t", ""),
            ("5\ttab\tinside", "tab\tinside"),
            ("5\tholdings", "holdings"),
        ] {
            let p = decode_pause("a.test", old).unwrap();
            assert_eq!((p.action, p.reason.as_str()), (PauseAction::Hold, reason));
        }
        assert!(decode_pause("a.test", "no tab").is_err());
    }
}
