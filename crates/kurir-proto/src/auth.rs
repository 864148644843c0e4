//! The client side of the API's key authentication: [`Bearer`] presents a key as the
//! server expects it (`authorization: Bearer <key>`), for `kurir admin`, `kurir demo`, the
//! load generator and the tests.

use std::fmt;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// An API key that cannot be sent in a header (it holds a control character, such as a
/// line break).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the API key is not valid in a header")]
pub struct InvalidApiKey;

/// A tonic interceptor that adds `authorization: Bearer <key>` to every call, or nothing
/// ([`Bearer::none`]). Its `Debug` never shows the key.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// Sends `key` with every call.
    pub fn new(key: &str) -> Result<Self, InvalidApiKey> {
        let value = format!("Bearer {key}").parse().map_err(|_| InvalidApiKey)?;
        Ok(Self(Some(value)))
    }

    /// Sends no key (to see how the server answers a call without one).
    pub fn none() -> Self {
        Self(None)
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Bearer(<redacted>)"),
            None => f.write_str("Bearer(None)"),
        }
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_goes_into_the_authorization_header_and_never_into_debug() {
        let mut bearer = Bearer::new("s3cret-key").unwrap();
        assert!(!format!("{bearer:?}").contains("s3cret"));
        let request = bearer.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer s3cret-key"
        );
        let request = Bearer::none().call(Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
        assert_eq!(Bearer::new("line\nbreak").unwrap_err(), InvalidApiKey);
    }
}
