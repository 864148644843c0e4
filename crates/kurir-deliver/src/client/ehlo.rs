//! [`Capabilities`] from an EHLO reply, parsed by `smtp-proto`'s `EhloResponse` (the
//! keyword grammar, `SIZE n`, `AUTH` mechanisms) from the reply's bytes as received.

use smtp_proto::{
    AUTH_ANONYMOUS, AUTH_CRAM_MD5, AUTH_DIGEST_MD5, AUTH_EXTERNAL, AUTH_GSSAPI, AUTH_LOGIN,
    AUTH_NTLM, AUTH_OAUTHBEARER, AUTH_PLAIN, AUTH_SCRAM_SHA_1, AUTH_SCRAM_SHA_1_PLUS,
    AUTH_SCRAM_SHA_256, AUTH_SCRAM_SHA_256_PLUS, AUTH_XOAUTH, AUTH_XOAUTH2, EXT_8BIT_MIME,
    EXT_CHUNKING, EXT_DSN, EXT_ENHANCED_STATUS_CODES, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8,
    EXT_START_TLS, EhloResponse,
};

use super::Capabilities;

/// The mechanisms reported in [`Capabilities::auth`]. `smtp-proto` reports mechanisms as
/// bits; these are the ones worth naming (we only speak PLAIN and LOGIN).
const AUTH_NAMES: &[(u64, &str)] = &[
    (AUTH_PLAIN, "PLAIN"),
    (AUTH_LOGIN, "LOGIN"),
    (AUTH_CRAM_MD5, "CRAM-MD5"),
    (AUTH_DIGEST_MD5, "DIGEST-MD5"),
    (AUTH_SCRAM_SHA_1, "SCRAM-SHA-1"),
    (AUTH_SCRAM_SHA_1_PLUS, "SCRAM-SHA-1-PLUS"),
    (AUTH_SCRAM_SHA_256, "SCRAM-SHA-256"),
    (AUTH_SCRAM_SHA_256_PLUS, "SCRAM-SHA-256-PLUS"),
    (AUTH_XOAUTH, "XOAUTH"),
    (AUTH_XOAUTH2, "XOAUTH2"),
    (AUTH_OAUTHBEARER, "OAUTHBEARER"),
    (AUTH_GSSAPI, "GSSAPI"),
    (AUTH_NTLM, "NTLM"),
    (AUTH_EXTERNAL, "EXTERNAL"),
    (AUTH_ANONYMOUS, "ANONYMOUS"),
];

/// Parses a complete `250` EHLO reply as received (CRLF line ends included).
pub(super) fn parse(raw: &[u8]) -> Result<Capabilities, String> {
    let ehlo = EhloResponse::parse(&mut raw.iter()).map_err(|e| format!("{e:?}"))?;
    let has = |ext| ehlo.has_capability(ext);
    Ok(Capabilities {
        pipelining: has(EXT_PIPELINING),
        size: has(EXT_SIZE).then_some(ehlo.size as u64),
        eightbitmime: has(EXT_8BIT_MIME),
        smtputf8: has(EXT_SMTP_UTF8),
        dsn: has(EXT_DSN),
        chunking: has(EXT_CHUNKING),
        starttls: has(EXT_START_TLS),
        enhanced_status_codes: has(EXT_ENHANCED_STATUS_CODES),
        auth: AUTH_NAMES
            .iter()
            .filter(|(bit, _)| ehlo.auth_mechanisms & bit != 0)
            .map(|(_, name)| (*name).to_owned())
            .collect(),
    })
}

impl Capabilities {
    /// Whether `mechanism` (upper case) is offered.
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m == mechanism)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_sizes_and_mechanisms() {
        let raw = b"250-mx.example.test greets us\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
                    250-8BITMIME\r\n250-X-UNKNOWN foo\r\n250-AUTH LOGIN PLAIN CRAM-MD5\r\n\
                    250-DSN\r\n250 STARTTLS\r\n";
        let caps = parse(raw).unwrap();
        assert!(caps.pipelining && caps.eightbitmime && caps.dsn && caps.starttls);
        assert!(!caps.smtputf8 && !caps.chunking && !caps.enhanced_status_codes);
        assert_eq!(caps.size, Some(1000));
        assert_eq!(caps.auth, ["PLAIN", "LOGIN", "CRAM-MD5"]);
        assert!(caps.offers_auth("PLAIN"));
    }

    #[test]
    fn a_bare_greeting_offers_nothing_and_size_without_limit_is_zero() {
        assert_eq!(
            parse(b"250 mx.example.test\r\n").unwrap(),
            Capabilities::default()
        );
        let caps = parse(b"250-mx\r\n250 SIZE\r\n").unwrap();
        assert_eq!(caps.size, Some(0));
    }
}
