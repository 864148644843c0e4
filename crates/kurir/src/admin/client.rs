//! The gRPC connection of `kurir admin`, and its errors.
//!
//! The key goes into every call as `authorization: Bearer <key>`; it is never printed (its
//! `Debug` is redacted, `--help` hides the environment's value). A unary call gets
//! [`CALL_TIMEOUT`]; the streams (import, export) are bounded by the server's own limits.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use kurir_proto::auth::Bearer;
use kurir_proto::v1::admin_service_client::AdminServiceClient;
use kurir_proto::v1::suppression_service_client::SuppressionServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::cli::{ApiArgs, EXIT_CONFIG};

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a unary call may take: longer than any queue acknowledgement or store call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest response accepted (a `QueueStats` of a node with very many sites).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Why a command failed; its `Display` is the one line printed after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A bad command line, a missing API key, an unreadable or malformed input file.
    #[error("{0}")]
    Usage(String),
    /// The node could not be reached.
    #[error("cannot connect to {server}: {message}")]
    Connect {
        /// `--server`.
        server: String,
        /// Why, with the causes.
        message: String,
    },
    /// The node refused or failed a call.
    #[error("{}", status_line(.0))]
    Rpc(Box<Status>),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}

impl AdminError {
    /// The exit status: 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_CONFIG,
            _ => 1,
        }
    }

    /// Whether the reader of stdout went away (`… | head`): not worth an error.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

impl From<Status> for AdminError {
    fn from(status: Status) -> Self {
        Self::Rpc(Box::new(status))
    }
}

impl From<std::io::Error> for AdminError {
    fn from(error: std::io::Error) -> Self {
        Self::Output(error)
    }
}

/// `UNAUTHENTICATED: unknown API key`, on one line, with the transport's causes when the
/// status carries them (a call on a connection that broke).
fn status_line(status: &Status) -> String {
    let mut line = format!("{}: {}", code_name(status.code()), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    one_line(&line)
}

/// Newlines (a multi-line message from a server or an OS) become spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The code's canonical name, as grpcurl and the gRPC docs spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An API key from the command line or `KURIR_API_KEY`; never shown.
#[derive(Clone)]
pub struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl FromStr for ApiKey {
    type Err = String;

    fn from_str(key: &str) -> Result<Self, Self::Err> {
        let key = key.trim();
        if key.is_empty() {
            return Err("the API key is empty".to_owned());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the API key must be printable ASCII without spaces".to_owned());
        }
        Ok(Self(key.to_owned()))
    }
}

/// A channel whose calls carry the key.
pub type Authed = InterceptedService<Channel, Bearer>;

/// A connection to a node's API.
#[derive(Debug)]
pub struct Api {
    channel: Channel,
    bearer: Bearer,
}

impl Api {
    /// Checks the options and connects (at most [`CONNECT_TIMEOUT`]).
    pub async fn connect(args: &ApiArgs) -> Result<Self, AdminError> {
        let key = args.api_key.as_ref().ok_or_else(|| {
            AdminError::Usage("no API key: pass --api-key or set KURIR_API_KEY".to_owned())
        })?;
        let bearer = Bearer::new(&key.0).map_err(|error| AdminError::Usage(error.to_string()))?;
        let endpoint = endpoint(&args.server, args.ca_file.as_deref())?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| AdminError::Connect {
                server: args.server.clone(),
                message: one_line(&error_chain(&error)),
            })?;
        Ok(Self { channel, bearer })
    }

    pub fn suppression(&self) -> SuppressionServiceClient<Authed> {
        SuppressionServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
            .max_decoding_message_size(MAX_RESPONSE)
    }

    pub fn admin(&self) -> AdminServiceClient<Authed> {
        AdminServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
            .max_decoding_message_size(MAX_RESPONSE)
    }
}

/// Awaits a unary call for at most [`CALL_TIMEOUT`].
pub async fn call<T>(
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, AdminError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(response) => Ok(response?.into_inner()),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no answer within {}",
            humantime::format_duration(CALL_TIMEOUT)
        ))
        .into()),
    }
}

/// The endpoint for `--server` (and `--ca-file` for https).
fn endpoint(server: &str, ca_file: Option<&Path>) -> Result<Endpoint, AdminError> {
    let usage = |message: String| AdminError::Usage(message);
    let https = if server.starts_with("https://") {
        true
    } else if server.starts_with("http://") {
        false
    } else {
        return Err(usage(format!(
            "--server {server:?}: expected http://HOST:PORT or https://HOST:PORT"
        )));
    };
    let mut endpoint = Endpoint::from_shared(server.to_owned())
        .map_err(|e| usage(format!("--server {server:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    match (https, ca_file) {
        (true, Some(ca)) => {
            let pem =
                std::fs::read(ca).map_err(|e| usage(format!("--ca-file {}: {e}", ca.display())))?;
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| usage(format!("--ca-file {}: {}", ca.display(), error_chain(&e))))?;
        }
        (true, None) => {
            return Err(usage(
                "an https:// server needs --ca-file: the CA that signed its certificate".to_owned(),
            ));
        }
        (false, Some(_)) => {
            return Err(usage("--ca-file needs an https:// server".to_owned()));
        }
        (false, None) => {}
    }
    Ok(endpoint)
}

/// The error with its causes (tonic's own text is only "transport error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_call_is_one_line_with_the_code_name() {
        let error = AdminError::from(Status::unauthenticated("unknown\nAPI key"));
        assert_eq!(error.to_string(), "UNAUTHENTICATED: unknown API key");
        assert_eq!(error.exit_code(), 1);
        assert_eq!(AdminError::Usage("x".into()).exit_code(), EXIT_CONFIG);
    }

    #[test]
    fn the_key_is_never_shown() {
        let key: ApiKey = "s3cret-key".parse().unwrap();
        assert!(!format!("{key:?}").contains("s3cret"));
        assert!("".parse::<ApiKey>().is_err());
        assert!("two words".parse::<ApiKey>().is_err());
    }

    #[test]
    fn servers_are_checked() {
        assert!(endpoint("http://127.0.0.1:50051", None).is_ok());
        for (server, ca) in [
            ("127.0.0.1:50051", None),
            ("https://127.0.0.1:50051", None),
            ("http://127.0.0.1:50051", Some(Path::new("/ca.pem"))),
            (
                "https://127.0.0.1:50051",
                Some(Path::new("/nonexistent/ca.pem")),
            ),
        ] {
            let error = endpoint(server, ca).unwrap_err();
            assert!(matches!(error, AdminError::Usage(_)), "{server}: {error}");
        }
    }
}
