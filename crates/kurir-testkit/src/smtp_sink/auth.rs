//! SASL responses for the sink's AUTH: base64 (written here so the sink stays independent
//! of the codecs the code under test uses) and the PLAIN message (RFC 4616).

/// The LOGIN mechanism's prompts, base64 of `Username:` and `Password:`.
pub(super) const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
pub(super) const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Decodes standard base64 (padding optional; `=` alone is the empty response of RFC 4954).
pub(super) fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let data = input.trim_end_matches('=');
    if input.len() - data.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in data.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A base64 response as UTF-8 text.
pub(super) fn decode_text(input: &str) -> Option<String> {
    String::from_utf8(base64_decode(input)?).ok()
}

/// The user and password of a PLAIN response (`authzid NUL authcid NUL passwd`).
pub(super) fn decode_plain(input: &str) -> Option<(String, String)> {
    let text = decode_text(input)?;
    let mut parts = text.split('\0');
    let (_authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_vectors() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("=").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(decode_text(LOGIN_USER_PROMPT).unwrap(), "Username:");
        assert_eq!(decode_text(LOGIN_PASSWORD_PROMPT).unwrap(), "Password:");
        assert!(base64_decode("Zm9v!").is_none());
    }

    #[test]
    fn plain_responses() {
        assert_eq!(
            decode_plain("AHVzZXIAc2VjcmV0"),
            Some(("user".to_owned(), "secret".to_owned()))
        );
        assert_eq!(decode_plain("dXNlcg=="), None);
    }
}
