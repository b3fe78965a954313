//! Dev tokens, signed with the gateway's own HS256 secret: for the `token` subcommand, the
//! banner's ready token and the chat demo's sign-in.

use std::time::Duration;

use wsbridge::config::{AuthConfig, JwtKey};
use wsbridge::dev::{Claims, DEV_SECRET, sign_hs256};

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(
        "tokens can only be minted with an HS256 secret (JWT_SECRET); this gateway verifies \
         with a public key or a JWK set"
    )]
    NotHs256,
    #[error("signing the token failed: {0}")]
    Sign(String),
}

/// A token for `sub`, valid for `valid_for`, that `auth` accepts (its issuer and audience
/// included).
pub fn mint(auth: &AuthConfig, sub: &str, valid_for: Duration) -> Result<String, MintError> {
    let JwtKey::Secret(secret) = &auth.key else {
        return Err(MintError::NotHs256);
    };
    let claims = Claims {
        iss: auth.issuer.clone(),
        aud: auth.audience.clone(),
        ..Claims::new(sub, valid_for)
    };
    sign_hs256(secret, &claims).map_err(|e| MintError::Sign(e.to_string()))
}

/// Whether the gateway verifies with the public dev secret: then anyone can sign a token
/// anyway, so handing them out over HTTP gives nothing away.
pub fn verifies_with_dev_secret(auth: &AuthConfig) -> bool {
    matches!(&auth.key, JwtKey::Secret(secret) if secret == DEV_SECRET)
}
