//! The one list of failures kurir reports to its clients, mapped once to SMTP replies and
//! gRPC status codes, so the two submission paths can never disagree about an error.

use std::fmt;

/// gRPC status codes (the numbering is fixed by the gRPC spec; `kurir-proto` turns these
/// into `tonic::Code` with `i32::from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl From<GrpcCode> for i32 {
    fn from(code: GrpcCode) -> i32 {
        code as i32
    }
}

/// An SMTP reply: basic code, enhanced status code (RFC 3463) and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    /// class.subject.detail, e.g. (5, 1, 1).
    pub enhanced: (u8, u16, u16),
    pub text: &'static str,
}

impl SmtpReply {
    /// Whether a client may try again later (4xx).
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (class, subject, detail) = self.enhanced;
        write!(f, "{} {class}.{subject}.{detail} {}", self.code, self.text)
    }
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident => $code:literal, ($c:literal, $s:literal, $d:literal), $text:literal, $grpc:ident; )*) => {
        /// Everything that can go wrong for a client, once.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The SMTP reply for this error.
            pub fn smtp_reply(self) -> SmtpReply {
                match self {
                    $( ErrorCode::$name => SmtpReply { code: $code, enhanced: ($c, $s, $d), text: $text }, )*
                }
            }

            /// The gRPC status code for this error.
            pub fn grpc_code(self) -> GrpcCode {
                match self {
                    $( ErrorCode::$name => GrpcCode::$grpc, )*
                }
            }
        }
    };
}

error_codes! {
    /// The command or its syntax is not recognised.
    SyntaxError => 500, (5, 5, 2), "Syntax error, command unrecognised", InvalidArgument;
    /// A command line is longer than the RFC 5321 limit.
    LineTooLong => 500, (5, 5, 6), "Line too long", InvalidArgument;
    /// A parameter or argument is malformed.
    InvalidParameter => 501, (5, 5, 4), "Syntax error in parameters or arguments", InvalidArgument;
    /// A command the server does not implement.
    NotImplemented => 502, (5, 5, 1), "Command not implemented", Unimplemented;
    /// Commands out of order (e.g. RCPT before MAIL).
    BadSequence => 503, (5, 5, 1), "Bad sequence of commands", FailedPrecondition;
    /// An ESMTP parameter the server does not support.
    UnsupportedParameter => 555, (5, 5, 4), "Parameter not recognised or not implemented", InvalidArgument;
    /// A mailbox address is syntactically invalid.
    InvalidAddress => 553, (5, 1, 3), "Invalid mailbox address syntax", InvalidArgument;
    /// The address needs SMTPUTF8 and the client did not ask for it.
    Utf8AddressNotAllowed => 553, (5, 6, 7), "Non-ASCII address requires SMTPUTF8", InvalidArgument;
    /// The sender may not relay to this recipient (not authenticated, not an allowed network).
    RelayDenied => 554, (5, 7, 1), "Relay access denied", PermissionDenied;
    /// The recipient is on the suppression list.
    RecipientSuppressed => 550, (5, 7, 1), "Recipient is suppressed (earlier bounce, complaint or unsubscribe)", FailedPrecondition;
    /// Authentication is required first.
    AuthRequired => 530, (5, 7, 0), "Authentication required", Unauthenticated;
    /// Credentials were wrong.
    AuthFailed => 535, (5, 7, 8), "Authentication credentials invalid", Unauthenticated;
    /// The mechanism needs an encrypted channel (AUTH in clear text).
    EncryptionRequired => 538, (5, 7, 11), "Encryption required for requested authentication mechanism", FailedPrecondition;
    /// The caller's identity may not do this (wrong tenant, service not allowed).
    PermissionDenied => 550, (5, 7, 1), "Not authorised", PermissionDenied;
    /// The message exceeds the size limit.
    MessageTooLarge => 552, (5, 3, 4), "Message size exceeds fixed limit", InvalidArgument;
    /// More recipients than allowed for one message (the client may send the rest later).
    TooManyRecipients => 452, (4, 5, 3), "Too many recipients", InvalidArgument;
    /// The message has no recipients.
    NoRecipients => 554, (5, 5, 1), "No valid recipients", InvalidArgument;
    /// The message itself is malformed (headers, MIME, bare CR/LF).
    InvalidMessage => 550, (5, 6, 0), "Message content rejected as malformed", InvalidArgument;
    /// The client exceeded a rate or connection limit.
    RateLimited => 421, (4, 7, 0), "Too many requests, slow down", ResourceExhausted;
    /// Too many errors in one session.
    TooManyErrors => 421, (4, 7, 0), "Too many errors, closing connection", ResourceExhausted;
    /// The queue did not acknowledge the message in time or is unreachable.
    QueueUnavailable => 451, (4, 3, 0), "Queue temporarily unavailable, try again later", Unavailable;
    /// The state store (suppression, idempotency) is unreachable.
    StateUnavailable => 451, (4, 3, 0), "State store temporarily unavailable, try again later", Unavailable;
    /// A phase of the session took longer than its timeout.
    Timeout => 421, (4, 4, 2), "Timeout exceeded, closing connection", DeadlineExceeded;
    /// The node is draining for shutdown.
    ShuttingDown => 421, (4, 3, 2), "Service shutting down", Unavailable;
    /// A bug or an unexpected failure; the client may retry.
    Internal => 451, (4, 3, 0), "Internal error, try again later", Internal;
}

impl ErrorCode {
    /// Whether the client may retry the same request later and expect it to work.
    pub fn is_transient(self) -> bool {
        self.smtp_reply().is_transient()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.smtp_reply().text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_consistent_reply() {
        for &code in ErrorCode::ALL {
            let reply = code.smtp_reply();
            // The enhanced class matches the basic code's class (RFC 3463 §2).
            assert_eq!(u16::from(reply.enhanced.0), reply.code / 100, "{code:?}");
            assert!(matches!(reply.code / 100, 4 | 5), "{code:?}");
            assert!(!reply.text.is_empty());
            // Transient SMTP errors are never reported to gRPC clients as caller bugs, except
            // 452 too-many-recipients, which in SMTP means "send the rest in another
            // transaction" and in gRPC is a request over its limit.
            if reply.is_transient() && code != ErrorCode::TooManyRecipients {
                assert_ne!(code.grpc_code(), GrpcCode::InvalidArgument, "{code:?}")
            }
        }
    }

    #[test]
    fn renders_like_an_smtp_reply_line() {
        assert_eq!(
            ErrorCode::ShuttingDown.smtp_reply().to_string(),
            "421 4.3.2 Service shutting down"
        );
        assert_eq!(ErrorCode::AuthFailed.grpc_code(), GrpcCode::Unauthenticated);
        assert_eq!(i32::from(GrpcCode::Unauthenticated), 16);
    }
}
