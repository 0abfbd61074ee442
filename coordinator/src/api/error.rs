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
                match db_error_is_transient(&e) {
                    true => Status::unavailable(format!("database error: {e}")),
                    // Retrying gets the same answer: the caller must not keep at it.
                    false => Status::internal(format!("database error: {e}")),
                }
            }
        }
    }
}

/// Whether a database error may pass on retry: the database unreachable, restarting, out of
/// resources, or a conflict with another transaction. Bad data (SQLSTATE class 22 or 23) and
/// everything else would fail the same way again.
fn db_error_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            ["08", "40", "53", "55P03", "57P", "58"].iter().any(|transient| code.starts_with(transient))
        }),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A database error that retrying cannot fix used to be `unavailable`, which agents retry
    /// for an hour; only the database being away or busy is now.
    #[test]
    fn only_passing_database_errors_are_unavailable() {
        let status = |e: sqlx::Error| Status::from(store::Error::Db(e)).code();
        assert_eq!(status(sqlx::Error::PoolTimedOut), tonic::Code::Unavailable);
        assert_eq!(status(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())), tonic::Code::Unavailable);
        assert_eq!(status(sqlx::Error::RowNotFound), tonic::Code::Internal);
        assert_eq!(status(sqlx::Error::ColumnNotFound("x".into())), tonic::Code::Internal);
    }
}
