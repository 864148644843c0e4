//! [`RemoteReply`]: an SMTP reply from a remote server, as the client, the bounce
//! classifier, DSNs and events see it.

use std::fmt;

use kurir_proto::v1;

/// One SMTP reply (possibly multi-line) from a remote server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteReply {
    /// The basic reply code, e.g. 550.
    pub code: u16,
    /// The enhanced status code (RFC 3463) as `class.subject.detail`, e.g. `5.1.1`; `None`
    /// when the server sent none.
    pub enhanced: Option<String>,
    /// The reply text without codes; the lines of a multi-line reply joined with `\n`.
    pub text: String,
}

impl RemoteReply {
    pub fn new(code: u16, enhanced: Option<&str>, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: enhanced.map(str::to_owned),
            text: text.into(),
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Whether the reply asks us to slow down: 421 (service closing, used by receivers to
    /// shed load) or a transient 4.7.x policy/rate reply, or text that says so.
    pub fn is_rate_limit(&self) -> bool {
        if self.code == 421 {
            return true;
        }
        if !self.is_transient() {
            return false;
        }
        if self
            .enhanced
            .as_deref()
            .is_some_and(|e| e.starts_with("4.7."))
        {
            return true;
        }
        let text = self.text.to_ascii_lowercase();
        [
            "rate limit",
            "too many",
            "try again later",
            "throttl",
            "slow down",
        ]
        .iter()
        .any(|needle| text.contains(needle))
    }

    /// The status for a DSN's `Status:` field: the enhanced code when given, else one
    /// derived from the basic code's class (`4.0.0` / `5.0.0` / `2.0.0`).
    pub fn status(&self) -> String {
        match &self.enhanced {
            Some(code) => code.clone(),
            None => format!("{}.0.0", self.code / 100),
        }
    }

    pub fn to_proto(&self) -> v1::RemoteReply {
        v1::RemoteReply {
            code: u32::from(self.code),
            enhanced_code: self.enhanced.clone().unwrap_or_default(),
            text: self.text.clone(),
        }
    }
}

impl fmt::Display for RemoteReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = &self.enhanced {
            write!(f, " {enhanced}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text.replace('\n', " / "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_replies() {
        assert!(RemoteReply::new(421, Some("4.3.2"), "bye").is_rate_limit());
        assert!(RemoteReply::new(450, Some("4.7.1"), "later").is_rate_limit());
        assert!(RemoteReply::new(451, None, "Too many messages, slow down").is_rate_limit());
        assert!(!RemoteReply::new(450, Some("4.2.1"), "mailbox busy").is_rate_limit());
        assert!(!RemoteReply::new(550, Some("5.7.1"), "rate limit").is_rate_limit());
    }

    #[test]
    fn status_and_display() {
        assert_eq!(RemoteReply::new(550, None, "no").status(), "5.0.0");
        assert_eq!(RemoteReply::new(550, Some("5.1.1"), "no").status(), "5.1.1");
        assert_eq!(
            RemoteReply::new(550, Some("5.1.1"), "no such\nuser").to_string(),
            "550 5.1.1 no such / user"
        );
    }
}
