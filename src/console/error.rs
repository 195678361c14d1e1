//! What the API answers when it does not do what was asked: a status and
//! the same words the CLI prints, as `{"error": "..."}`.

use std::process::ExitCode;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::control::approvals::ApprovalError;
use crate::control::tokens::TokenError;
use crate::replay::apply::ApplyError;
use crate::replay::planning::PlanningError;
use crate::store::StoreError;

/// An answer other than success.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    /// 400: the request itself is wrong; the message says how to fix it.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: a safety check refused; nothing was changed.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.message, "console request failed");
        }
        (self.status, axum::Json(serde_json::json!({"error": self.message}))).into_response()
    }
}

/// Any error the library returns, classed as the CLI classes it for its exit
/// code (usage 2 → 400, refused 3 → 409, stopped 4 → 409, else 500), with
/// the line the CLI prints.
impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        let status = match crate::exit::code_for(&error) {
            code if code == ExitCode::from(2) => StatusCode::BAD_REQUEST,
            code if code == ExitCode::from(crate::exit::REFUSED) || code == ExitCode::from(crate::exit::STOPPED) => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, crate::exit::render(&error))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        anyhow::Error::from(error).into()
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::BadName(_) => Self::bad_request(error.to_string()),
            TokenError::NameTaken(_) => Self::refused(error.to_string()),
            TokenError::Unknown(_) => Self::not_found(error.to_string()),
            TokenError::Store(store) => store.into(),
        }
    }
}

impl From<ApprovalError> for ApiError {
    fn from(error: ApprovalError) -> Self {
        match error {
            ApprovalError::Store(store) => store.into(),
            refusal => Self::refused(refusal.to_string()),
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(error: ApplyError) -> Self {
        anyhow::Error::from(error).into()
    }
}

impl From<PlanningError> for ApiError {
    fn from(error: PlanningError) -> Self {
        match error {
            PlanningError::Usage(message) => ApiError::bad_request(message),
            PlanningError::Refused(message) => ApiError::refused(format!("refused: {message}")),
            other => anyhow::Error::from(other).into(),
        }
    }
}
