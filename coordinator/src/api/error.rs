//! Where the layers' errors become gRPC statuses, and nowhere else.

use crate::domain::Invalid;
use crate::infra::auth::CredentialError;
use crate::jobs::rescore::RescoreError;
use crate::store;
use tonic::Status;

impl From<store::Error> for Status {
    fn from(e: store::Error) -> Self {
        use store::Error::*;
        match e {
            Invalid(m) => Status::invalid_argument(m),
            NotFound(m) => Status::not_found(m),
            AlreadyExists(m) => Status::already_exists(m),
            Precondition(m) => Status::failed_precondition(m),
            Forbidden(m) => Status::permission_denied(m),
            Unauthenticated(m) => Status::unauthenticated(m),
            Db(e) => {
                tracing::error!(error = %e, "database error");
                Status::unavailable(format!("database error: {e}"))
            }
        }
    }
}

impl From<Invalid> for Status {
    fn from(e: Invalid) -> Self {
        Status::invalid_argument(e.0)
    }
}

impl From<CredentialError> for Status {
    fn from(e: CredentialError) -> Self {
        Status::unauthenticated(e.to_string())
    }
}

impl From<RescoreError> for Status {
    fn from(e: RescoreError) -> Self {
        match e {
            RescoreError::Judge(e) => Status::failed_precondition(e.to_string()),
            RescoreError::Store(e) => e.into(),
        }
    }
}

/// Prefixes a status's message, keeping its code: "batch 3: ...".
pub(crate) fn prefixed(prefix: &str, s: Status) -> Status {
    Status::new(s.code(), format!("{prefix}: {}", s.message()))
}
