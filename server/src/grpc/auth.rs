//! Optional bearer-token authentication of the retouch services. Health and
//! reflection stay open so probes and `grpcurl list` work without a token.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` when a token is configured.
#[derive(Clone, Default)]
pub struct BearerAuth {
    token: Option<Arc<SecretString>>,
}

impl BearerAuth {
    /// Requires `token` on every call; `None` lets every call through.
    pub fn new(token: Option<SecretString>) -> Self {
        BearerAuth {
            token: token.map(Arc::new),
        }
    }
}

impl BearerAuth {
    /// Whether an `authorization` header value passes (always, without a
    /// configured token). Compared in constant time.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let expected = token.expose_secret().as_bytes();
        !given.is_empty() && bool::from(given.as_bytes().ct_eq(expected))
    }
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("enabled", &self.token.is_some())
            .finish()
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if self.admits(given) {
            Ok(request)
        } else {
            // Never echo what was sent: it may be a near-miss of the secret.
            Err(Status::unauthenticated(
                "this retouchd requires `authorization: Bearer <token>` metadata",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(auth: &BearerAuth, header: Option<&'static str>) -> Result<(), Status> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        auth.clone().call(request).map(|_| ())
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let auth = BearerAuth::new(Some(SecretString::from("s3cret")));
        assert!(call(&auth, Some("Bearer s3cret")).is_ok());
        assert!(call(&auth, Some("Bearer s3cre")).is_err());
        assert!(call(&auth, Some("s3cret")).is_err());
        assert!(call(&auth, None).is_err());
        let err = call(&auth, Some("Bearer wrong")).unwrap_err();
        assert!(!err.message().contains("wrong"));
        assert!(call(&BearerAuth::default(), None).is_ok());
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
