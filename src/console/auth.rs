//! Who is asking: the API's `Authorization: Bearer TOKEN`, resolved to the
//! token's name and role. No token or one not in force is 401; a role
//! without the right is 403. The token's name is the operator every write
//! is audited under; the token itself is never logged or stored.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::error::ApiError;
use super::Console;
use crate::control::tokens;
use crate::store::tokens::Role;

/// The holder of the token the request presented.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller's role includes `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        require(&self.name, self.role, needed)
    }
}

/// 403 unless `role` includes `needed`, in the words the API and the pages
/// share (the token's name, its role, the role needed, how to get one).
pub(crate) fn require(name: &str, role: Role, needed: Role) -> Result<(), ApiError> {
    if role >= needed {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "token '{name}' has the role {role}; this needs {needed}: ask an admin for a token with that role (`replay token create --role {needed}`)"
        ),
    ))
}

impl<S> FromRequestParts<S> for Caller
where
    Console: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let console = Console::from_ref(state);
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(unauthorized("no token: send `Authorization: Bearer TOKEN` (`replay token create` makes one)"));
        };
        match tokens::holder(console.pool(), presented).await? {
            Some(holder) => Ok(Caller { name: holder.name, role: holder.role }),
            None => Err(unauthorized(
                "this token is not in force (unknown or revoked): `replay token list` shows the tokens",
            )),
        }
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}
