//! Domains and mailbox addresses, parsed and normalised once at the edge.
//!
//! Normal form (what [`Address`]'s `Display` renders and what suppression lists, the
//! delivery ledger and routing keys compare):
//! - the domain as its IDNA A-label, lower-cased (`Bücher.Test` → `xn--bcher-kva.test`);
//! - the local part exactly as given (RFC 5321 §2.4: only the receiving host may treat it
//!   case-insensitively), except that a needlessly quoted local part (`"john"`) is unquoted.
//!
//! Address literals (`user@[192.0.2.1]`) are refused: an outbound MTA for transactional
//! mail has no business delivering to raw IPs, and refusing them keeps routing keys domains.

use std::fmt;
use std::str::FromStr;

/// RFC 5321 §4.5.3.1.1.
pub const MAX_LOCAL_PART_OCTETS: usize = 64;
/// RFC 5321 §4.5.3.1.3 allows a 256-octet path including `<` and `>`; the address inside
/// may therefore be at most 254 octets.
pub const MAX_ADDRESS_OCTETS: usize = 254;
/// RFC 1035 / RFC 5321 §4.5.3.1.2 (in presentation form, without a trailing dot).
pub const MAX_DOMAIN_OCTETS: usize = 253;

/// Why a domain or address was refused. Messages are meant for the client: they say what
/// is wrong without echoing unbounded input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address has no '@'")]
    MissingAt,
    #[error("address is longer than {MAX_ADDRESS_OCTETS} octets")]
    TooLong,
    #[error("local part is empty")]
    EmptyLocalPart,
    #[error("local part is longer than {MAX_LOCAL_PART_OCTETS} octets")]
    LocalPartTooLong,
    #[error("local part is not a valid dot-atom or quoted string: {0}")]
    InvalidLocalPart(&'static str),
    #[error("domain is empty")]
    EmptyDomain,
    #[error("domain is longer than {MAX_DOMAIN_OCTETS} octets")]
    DomainTooLong,
    #[error("domain is not a valid (internationalised) host name")]
    InvalidDomain,
    #[error("address literals such as [192.0.2.1] are not accepted")]
    AddressLiteral,
}

/// A mail domain in normal form: IDNA A-label, lower case, no trailing dot.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Domain(String);

impl Domain {
    /// Parses and normalises a domain given as U-labels, A-labels or a mix of both.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        if input.is_empty() {
            return Err(AddressError::EmptyDomain);
        }
        if input.starts_with('[') {
            return Err(AddressError::AddressLiteral);
        }
        // Bound the work done on hostile input before IDNA processing.
        if input.len() > MAX_DOMAIN_OCTETS * 4 {
            return Err(AddressError::DomainTooLong);
        }
        if input.ends_with('.') {
            return Err(AddressError::InvalidDomain);
        }
        let ascii = idna::domain_to_ascii_strict(input).map_err(|_| AddressError::InvalidDomain)?;
        if ascii.len() > MAX_DOMAIN_OCTETS {
            return Err(AddressError::DomainTooLong);
        }
        if ascii.is_empty() || !ascii.split('.').all(is_ldh_label) {
            return Err(AddressError::InvalidDomain);
        }
        Ok(Self(ascii))
    }

    /// The normal (A-label, lower-case) form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain for display to humans (U-labels where the name is internationalised).
    pub fn to_unicode(&self) -> String {
        let (unicode, result) = idna::domain_to_unicode(&self.0);
        match result {
            Ok(()) => unicode,
            Err(_) => self.0.clone(),
        }
    }

    /// Whether `self` is `other` or a subdomain of it (`a.b.test` is within `b.test`).
    pub fn is_within(&self, other: &Domain) -> bool {
        self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.ends_with(&other.0)
                && self.0.as_bytes()[self.0.len() - other.0.len() - 1] == b'.')
    }
}

fn is_ldh_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({})", self.0)
    }
}

impl FromStr for Domain {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A mailbox: `local@domain`, in normal form (see the module docs).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    /// Kept exactly as the sender wrote it, unquoted where quoting was not needed; quoted
    /// again on output by [`Address`]'s `Display` when it must be.
    local: String,
    domain: Domain,
}

impl Address {
    /// Parses a mailbox as it appears inside an SMTP path's angle brackets or in an API
    /// field, e.g. `user@example.test`, `"john doe"@example.test`, `ÿ@bücher.test`.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        if input.len() > MAX_ADDRESS_OCTETS {
            return Err(AddressError::TooLong);
        }
        let (local, rest) = split_local_part(input)?;
        let domain_text = rest.strip_prefix('@').ok_or(AddressError::MissingAt)?;
        let domain = Domain::parse(domain_text)?;
        if local.len() > MAX_LOCAL_PART_OCTETS {
            return Err(AddressError::LocalPartTooLong);
        }
        let address = Self { local, domain };
        if address.rendered_len() > MAX_ADDRESS_OCTETS {
            return Err(AddressError::TooLong);
        }
        Ok(address)
    }

    /// Builds an address from parts that are already valid.
    pub fn new(local: &str, domain: Domain) -> Result<Self, AddressError> {
        Self::parse(&format!("{}@{}", LocalPart(local), domain))
    }

    /// The length of the normal form (`Display`), without rendering it.
    fn rendered_len(&self) -> usize {
        let local = if is_dot_atom(&self.local) {
            self.local.len()
        } else {
            let escapes = self
                .local
                .bytes()
                .filter(|b| matches!(b, b'"' | b'\\'))
                .count();
            self.local.len() + escapes + 2
        };
        local + 1 + self.domain.as_str().len()
    }

    /// The local part, unquoted.
    pub fn local_part(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// Whether this address can only be transmitted with SMTPUTF8 (its local part is not
    /// ASCII; the domain never needs it since it is carried as an A-label).
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", LocalPart(&self.local), self.domain)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// RFC 5322 atext, extended by RFC 6531 with any non-ASCII character.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// Splits the local part off `input`, returning it unquoted and the rest (`@domain`).
fn split_local_part(input: &str) -> Result<(String, &str), AddressError> {
    if let Some(quoted) = input.strip_prefix('"') {
        return split_quoted_local_part(quoted);
    }
    let at = input.rfind('@').ok_or(AddressError::MissingAt)?;
    let local = &input[..at];
    if local.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    if !is_dot_atom(local) {
        return Err(AddressError::InvalidLocalPart(
            "characters outside atext, or an empty, leading or trailing dot",
        ));
    }
    Ok((local.to_owned(), &input[at..]))
}

fn split_quoted_local_part(quoted: &str) -> Result<(String, &str), AddressError> {
    let mut local = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                if local.is_empty() {
                    return Err(AddressError::EmptyLocalPart);
                }
                return Ok((local, &quoted[i + 1..]));
            }
            '\\' => match chars.next() {
                Some((_, escaped)) if is_quoted_pair_char(escaped) => local.push(escaped),
                _ => return Err(AddressError::InvalidLocalPart("bad quoted-pair")),
            },
            c if is_qtext(c) => local.push(c),
            _ => {
                return Err(AddressError::InvalidLocalPart(
                    "control character in quoted string",
                ));
            }
        }
    }
    Err(AddressError::InvalidLocalPart("unterminated quoted string"))
}

/// RFC 5321 qtextSMTP (printable ASCII but `"` and `\`), plus space, plus UTF-8 (RFC 6531).
fn is_qtext(c: char) -> bool {
    (c == ' ' || c.is_ascii_graphic() || !c.is_ascii()) && c != '"' && c != '\\'
}

/// RFC 5321 quoted-pairSMTP: a backslash followed by any printable ASCII or space.
fn is_quoted_pair_char(c: char) -> bool {
    c == ' ' || c.is_ascii_graphic()
}

/// A local part as written in an address: as it is when it is a dot-atom, else quoted.
struct LocalPart<'a>(&'a str);

impl fmt::Display for LocalPart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        if is_dot_atom(self.0) {
            return f.write_str(self.0);
        }
        f.write_char('"')?;
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_char('\\')?;
            }
            f.write_char(c)?;
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_check_measures_the_normal_form() {
        for text in [
            "a@b.test",
            r#""john doe"@example.test"#,
            r#""a\"b\\c"@example.test"#,
            "ÿ@bücher.test",
        ] {
            let a = Address::parse(text).unwrap();
            assert_eq!(a.rendered_len(), a.to_string().len(), "{text}");
        }
    }

    #[test]
    fn normalises_domain_case_and_idna() {
        let a = Address::parse("John.Doe@Example.TEST").unwrap();
        assert_eq!(a.to_string(), "John.Doe@example.test");
        let b = Address::parse("info@Bücher.test").unwrap();
        assert_eq!(b.domain().as_str(), "xn--bcher-kva.test");
        assert_eq!(b.domain().to_unicode(), "bücher.test");
        assert!(!b.needs_smtputf8());
        assert_eq!(
            Address::parse("info@xn--bcher-kva.test").unwrap(),
            Address::parse("info@BÜCHER.test").unwrap()
        );
    }

    #[test]
    fn utf8_local_part_needs_smtputf8() {
        let a = Address::parse("用户@例子.test").unwrap();
        assert!(a.needs_smtputf8());
        assert_eq!(a.local_part(), "用户");
        assert!(a.domain().as_str().starts_with("xn--"));
    }

    #[test]
    fn quoted_local_parts() {
        let a = Address::parse(r#""john doe"@example.test"#).unwrap();
        assert_eq!(a.local_part(), "john doe");
        assert_eq!(a.to_string(), r#""john doe"@example.test"#);
        // Needless quotes are dropped, so both spellings compare equal.
        let b = Address::parse(r#""john"@example.test"#).unwrap();
        assert_eq!(b, Address::parse("john@example.test").unwrap());
        let c = Address::parse(r#""a\"b@c"@example.test"#).unwrap();
        assert_eq!(c.local_part(), r#"a"b@c"#);
        assert_eq!(Address::parse(&c.to_string()).unwrap(), c);
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        use AddressError::*;
        let cases: &[(&str, AddressError)] = &[
            ("", Empty),
            ("nobody", MissingAt),
            ("@example.test", EmptyLocalPart),
            ("user@", EmptyDomain),
            ("user@[192.0.2.1]", AddressLiteral),
            (
                "a..b@example.test",
                InvalidLocalPart("characters outside atext, or an empty, leading or trailing dot"),
            ),
            (
                ".a@example.test",
                InvalidLocalPart("characters outside atext, or an empty, leading or trailing dot"),
            ),
            (
                "a b@example.test",
                InvalidLocalPart("characters outside atext, or an empty, leading or trailing dot"),
            ),
            (
                r#""unterminated@example.test"#,
                InvalidLocalPart("unterminated quoted string"),
            ),
            ("user@exa mple.test", InvalidDomain),
            ("user@-bad.test", InvalidDomain),
            ("user@example.test.", InvalidDomain),
            ("user@exa_mple.test", InvalidDomain),
            ("user@a..test", InvalidDomain),
        ];
        for (input, want) in cases {
            assert_eq!(Address::parse(input).unwrap_err(), *want, "input {input:?}");
        }
        let long_local = format!("{}@example.test", "a".repeat(65));
        assert_eq!(Address::parse(&long_local).unwrap_err(), LocalPartTooLong);
        let long = format!("a@{}.test", "b".repeat(250));
        assert_eq!(Address::parse(&long).unwrap_err(), TooLong);
        let long_label = format!("a@{}.test", "b".repeat(64));
        assert_eq!(Address::parse(&long_label).unwrap_err(), InvalidDomain);
    }

    #[test]
    fn subdomain_check() {
        let parent = Domain::parse("example.test").unwrap();
        assert!(Domain::parse("mx.example.test").unwrap().is_within(&parent));
        assert!(parent.is_within(&parent));
        assert!(!Domain::parse("badexample.test").unwrap().is_within(&parent));
    }
}
