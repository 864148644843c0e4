//! State errors. Callers need to know one thing first: can trying again help? An unavailable
//! store is retryable (submission answers `451 4.3.0`, delivery defers), bad input is not.

use kurir_core::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The store cannot be reached or did not answer in time. Fail fast, retry later.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// A field of the request is invalid.
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The tenant is not configured.
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    /// Stored data could not be read (corruption, a foreign writer): a bug to report.
    #[error("state store data error: {0}")]
    Corrupt(String),
}

impl StateError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// The client-facing error (SMTP reply / gRPC status).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unavailable(_) | Self::Corrupt(_) => ErrorCode::StateUnavailable,
            Self::Invalid {
                field: "address", ..
            } => ErrorCode::InvalidAddress,
            Self::Invalid { .. } => ErrorCode::InvalidParameter,
            Self::UnknownTenant(_) => ErrorCode::PermissionDenied,
        }
    }
}
